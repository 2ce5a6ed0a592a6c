"""
`distill_mos.lhotse.score_cuts` (issue 21.2) on a CutSet built from the bundled recordings: cuts shorter and longer
than a window (7.68 s), parts of longer recordings, 16 and 48 kHz, a mixed cut and an unreadable one; each cut's
`custom["mos"]` equals the scorer's score of the same samples; lazy in, lazy out.
"""

import pytest

from conftest import GENSPEECH, TCDVOIP, require_module

require_module("lhotse", "the lhotse extra (in the test extra)")

from lhotse import CutSet, Recording  # noqa: E402
from lhotse.audio import AudioSource  # noqa: E402

from distill_mos.lhotse import score_cuts  # noqa: E402

SAME_ROUTE = 1e-5  # MOS: our score by another route (conftest's class)


@pytest.fixture(scope="module")
def cuts() -> CutSet:
    dir1 = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir1"
    dir3 = GENSPEECH / "audio" / "LPCNet_listening_test" / "mfall" / "dir3"
    short = Recording.from_file(dir1 / "opus.wav", recording_id="dir1-opus").to_cut()  # 7.0 s: one padded window
    long = Recording.from_file(dir3 / "speex.wav", recording_id="dir3-speex").to_cut()  # 7.8 s: two windows
    voip = Recording.from_file(TCDVOIP / "audio" / "Test_Set" / "NOISE" / "C_05_NOISE_MK.wav").to_cut()  # 48 kHz, 8.5 s
    mixed = short.truncate(duration=4.0).append(long.truncate(offset=1.0, duration=4.5))  # 8.5 s, two recordings
    missing = Recording(
        id="missing", sources=[AudioSource(type="file", channels=[0], source="/nonexistent/missing.wav")],
        sampling_rate=16000, num_samples=16000, duration=1.0,
    ).to_cut()
    return CutSet.from_cuts([
        short,
        long.truncate(offset=2.5, duration=3.0, preserve_id=False),  # part of a longer recording
        voip.truncate(offset=0.5, duration=8.0, preserve_id=False),  # part, longer than a window
        missing,
        mixed,
        long,
    ])


@pytest.fixture(scope="module")
def scored(cuts) -> CutSet:
    return score_cuts(cuts)


def test_each_cut_gets_the_scorer_score_of_its_own_span(cuts, scored, scorer):
    assert [c.id for c in scored] == [c.id for c in cuts]
    good = [c for c in cuts if c.id != "missing"]
    assert {c.duration for c in good} & {3.0} and max(c.duration for c in good) > 7.68  # shorter and longer than a window
    expected = scorer.score_arrays([c.load_audio()[0] for c in good], [c.sampling_rate for c in good])
    by_id = {c.id: c for c in scored}
    for cut, want in zip(good, expected):
        assert by_id[cut.id].custom["mos"] == pytest.approx(want.mos, abs=SAME_ROUTE), cut.id
    whole, part = by_id[good[-1].id].custom["mos"], by_id[good[1].id].custom["mos"]
    assert abs(whole - part) > 0.01  # the part is scored on its span, not on its whole recording


def test_a_cut_that_cannot_be_loaded_keeps_the_others(scored):
    by_id = {c.id: c for c in scored}
    assert by_id["missing"].custom["mos"] is None
    error = by_id["missing"].custom["mos_error"]
    assert error.startswith("audio could not be loaded:") and "/nonexistent/missing.wav" in error and "no such file" in error
    assert "\n" not in error  # one line, not every audio backend's trace
    assert sum(c.custom["mos"] is not None for c in scored) == len(scored) - 1


def test_the_input_cuts_are_left_as_they_were(cuts, scored):
    assert all(not (c.custom or {}).get("mos") for c in cuts)
    assert not cuts.is_lazy and not scored.is_lazy  # eager in, eager out (as CutSet.map)


def test_lazy_in_lazy_out_scored_while_iterated(cuts, scored, scorer, tmp_path, monkeypatch):
    manifest = tmp_path / "cuts.jsonl.gz"
    cuts.subset(first=3).to_jsonl(manifest)
    calls = []
    original = scorer.score_clips
    monkeypatch.setattr(scorer, "score_clips", lambda waveforms: calls.append(len(waveforms)) or original(waveforms))
    lazy = score_cuts(CutSet.from_jsonl_lazy(manifest), scorer=scorer, key="distill_mos")
    assert lazy.is_lazy and calls == []  # nothing scored yet
    lazy.to_jsonl(tmp_path / "scored.jsonl.gz")
    assert calls == [3]
    written = {c.id: c.custom["distill_mos"] for c in CutSet.from_jsonl_lazy(tmp_path / "scored.jsonl.gz")}
    assert written == pytest.approx({c.id: c.custom["mos"] for c in scored.subset(first=3)}, abs=SAME_ROUTE)
