"""
`distill_mos.nemo_curator.DistillMOSFilterStage` (issue 21.3): audio files, in-memory waveforms and VAD segments get
the scorer's scores in `distill_mos`; `mos_threshold` drops the items below it; an unreadable file is named, and kept
with its reason when only annotating.
"""

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import GENSPEECH, TCDVOIP, require_module

require_module("nemo_curator", "the nemo-curator extra (in the test extra)")

from nemo_curator.tasks import AudioTask  # noqa: E402

from distill_mos.nemo_curator import DistillMOSFilterStage  # noqa: E402

SAME_ROUTE = 1e-5  # MOS: our score by another route (conftest's class)
DIR1 = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir1"
VOIP = TCDVOIP / "audio" / "Test_Set" / "NOISE" / "C_13_NOISE_MK.wav"


def clip(path, seconds: float) -> tuple[np.ndarray, int]:
    rate = sf.info(path).samplerate
    return sf.read(path, dtype="float32", frames=int(seconds * rate))[0], rate


@pytest.fixture(scope="module")
def stage():
    stage = DistillMOSFilterStage(mos_threshold=None)
    stage.setup()
    return stage


def tasks() -> list[AudioTask]:
    speex, melp = clip(DIR1 / "speex.wav", 3.0), clip(DIR1 / "melp.wav", 2.5)
    return [
        AudioTask(task_id="file", data={"audio_filepath": str(VOIP)}),
        AudioTask(task_id="tensor", data={"waveform": torch.from_numpy(speex[0])[None], "sample_rate": speex[1]}),
        AudioTask(task_id="vad", data={"segments": [
            {"waveform": melp[0], "sample_rate": melp[1]},
            {"waveform": speex[0][:16000], "sample_rate": speex[1]},
        ]}),
        AudioTask(task_id="missing", data={"audio_filepath": "/nonexistent/missing.wav"}),
    ]


@pytest.fixture(scope="module")
def expected(scorer) -> dict[str, float]:
    speex, melp = clip(DIR1 / "speex.wav", 3.0), clip(DIR1 / "melp.wav", 2.5)
    arrays = scorer.score_arrays([speex[0], melp[0], speex[0][:16000]], 16000)
    return {"file": next(scorer.score_files([VOIP])).mos, "tensor": arrays[0].mos, "vad0": arrays[1].mos, "vad1": arrays[2].mos}


def test_annotates_every_item_with_the_scorer_score(stage, expected):
    out = {t.task_id: t.data for t in stage.process_batch(tasks())}
    assert out["file"]["distill_mos"] == pytest.approx(expected["file"], abs=SAME_ROUTE)
    assert out["tensor"]["distill_mos"] == pytest.approx(expected["tensor"], abs=SAME_ROUTE)
    assert [s["distill_mos"] for s in out["vad"]["segments"]] == pytest.approx([expected["vad0"], expected["vad1"]], abs=SAME_ROUTE)
    assert out["missing"]["distill_mos"] is None
    assert "[missing] /nonexistent/missing.wav" in out["missing"]["distill_mos_error"]


def test_the_threshold_drops_items_and_segments_below_it(stage, expected):
    scores = sorted(expected.values())
    threshold = (scores[1] + scores[2]) / 2  # two items below, two above
    stage.mos_threshold = threshold
    try:
        out = stage.process_batch(tasks())
    finally:
        stage.mos_threshold = None
    kept = {t.task_id for t in out}
    flat = {"file": expected["file"], "tensor": expected["tensor"]}
    assert kept - {"vad"} == {k for k, v in flat.items() if v >= threshold}
    segments = [e for e in (expected["vad0"], expected["vad1"]) if e >= threshold]
    if segments:
        (vad,) = [t for t in out if t.task_id == "vad"]
        assert [s["distill_mos"] for s in vad.data["segments"]] == pytest.approx(segments, abs=SAME_ROUTE)
    else:
        assert "vad" not in kept
    assert "missing" not in kept  # unscorable: dropped when filtering, as NeMo Curator's UTMOS and SIGMOS stages do
