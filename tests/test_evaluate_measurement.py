"""
The `evaluate` measurement eval/distill_mos (issue 21.4), loaded offline: arrays at 16 and 48 kHz and a 🤗 datasets
Audio column get the scorer's scores; a bad clip gets its reason and keeps the others' scores.
"""

import math

import numpy as np
import pytest
import soundfile as sf

from conftest import GENSPEECH, ROOT, TCDVOIP, require_module

evaluate = require_module("evaluate", "the evaluate extra (in the test extra)")

SAME_ROUTE = 1e-5  # MOS: our score by another route (conftest's class)
OPUS = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir1" / "opus.wav"
VOIP = TCDVOIP / "audio" / "Test_Set" / "NOISE" / "C_09_NOISE_MK.wav"


@pytest.fixture(scope="module")
def measurement():
    import os

    assert os.environ["HF_EVALUATE_OFFLINE"] == "1"  # conftest: nothing may come from the Hub
    return evaluate.load(str(ROOT / "eval" / "distill_mos"), module_type="measurement")


def test_arrays_at_any_rate_get_the_scorer_scores(measurement, scorer):
    speech, voip = sf.read(OPUS, dtype="float32", frames=3 * 16000)[0], sf.read(VOIP, dtype="float32", frames=3 * 48000)[0]
    result = measurement.compute(data=[speech, voip], sampling_rate=[16000, 48000])
    expected = [s.mos for s in scorer.score_arrays([speech, voip], [16000, 48000])]
    assert result["mos"] == pytest.approx(expected, abs=SAME_ROUTE)
    assert result["mean_mos"] == pytest.approx(np.mean(expected), abs=SAME_ROUTE)
    assert result["errors"] == [None, None] and result["warnings"] == [None, None]


def test_a_datasets_audio_column_gets_the_command_line_scores(measurement, scorer):
    datasets = require_module("datasets", "the evaluate extra (in the test extra)")
    column = datasets.Dataset.from_dict({"audio": [str(OPUS), str(VOIP)]}).cast_column("audio", datasets.Audio())["audio"]
    result = measurement.compute(data=column)
    expected = [r.mos for r in scorer.score_files([OPUS, VOIP])]  # what `distill-mos` prints for the files
    assert result["mos"] == pytest.approx(expected, abs=SAME_ROUTE)


def test_a_bad_clip_keeps_the_others_scores(measurement, scorer):
    speech = sf.read(OPUS, dtype="float32", frames=2 * 16000)[0]
    broken = speech.copy()
    broken[100] = np.nan
    result = measurement.compute(data=[speech, broken, np.zeros(16000, np.float32)], sampling_rate=16000)
    assert result["mos"][0] == pytest.approx(scorer.score_array(speech, 16000).mos, abs=SAME_ROUTE)
    assert result["mos"][1] is None and result["errors"][1].startswith("audio contains 1 NaN") and "NaN" in result["errors"][1]
    assert result["mos"][2] is not None and "silent" in result["warnings"][2]
    assert result["mean_mos"] == pytest.approx((result["mos"][0] + result["mos"][2]) / 2)
    assert math.isnan(measurement.compute(data=[broken], sampling_rate=16000)["mean_mos"])


def test_an_array_without_a_sampling_rate_is_refused(measurement):
    with pytest.raises(ValueError, match="clip 0 is an array: pass sampling_rate"):
        measurement.compute(data=[np.zeros(16000, np.float32)])
