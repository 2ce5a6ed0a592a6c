"""Failures stay with the clip or file that caused them; nothing turns into a silently wrong score."""

import csv
import threading
import time

import numpy as np
import pytest
import soundfile
import torch
from conftest import GENSPEECH

from distill_mos import DistillMOSScorer
from distill_mos.results import ScoringFailure
from distill_mos.cli import main

DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"


def test_unresamplable_rate_is_that_files_error(capsys, tmp_path):
    odd = tmp_path / "odd_rate.wav"
    soundfile.write(odd, soundfile.read(DIR3 / "ref.wav", dtype="float32")[0][:8001], 8001)
    out = tmp_path / "out.csv"
    code = main([str(DIR3 / "speex.wav"), str(odd), str(DIR3 / "opus.wav"), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    [line] = [line for line in err.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: {odd}: a sampling rate of 8001 Hz cannot be resampled to 16000 Hz")
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["file"] for row in rows] == [str(DIR3 / "speex.wav"), str(odd), str(DIR3 / "opus.wav")]
    assert rows[1]["mos"] == "" and rows[1]["error"] == line[len(f"error: {odd}: "):]  # the whole reason
    assert rows[0]["error"] == rows[2]["error"] == "" and rows[0]["mos"] and rows[2]["mos"]


class _FailsOnOneClip(DistillMOSScorer):
    """Scoring raises (as an out-of-memory would) whenever the batch holds the clip of length 12345."""

    def score_prepared(self, waveforms):
        if any(len(w) == 12345 for w in waveforms):
            raise RuntimeError("simulated out of memory")
        return super().score_prepared(waveforms)


def test_a_failing_batch_only_costs_the_failing_clip(model, feature_extractor, scorer):
    flaky = _FailsOnOneClip(model, feature_extractor)
    good = soundfile.read(DIR3 / "melp.wav", dtype="float32")[0]
    scores = flaky.score_clips([good, np.full(12345, 0.1, np.float32), good[:20000]])
    assert scores[1] == ScoringFailure("scoring failed: RuntimeError: simulated out of memory", "RuntimeError")
    assert scores[0].mos == pytest.approx(scorer.score_array(good, 16000).mos, abs=1e-5)
    assert scores[2].mos == pytest.approx(scorer.score_array(good[:20000], 16000).mos, abs=1e-5)


def test_nan_window_scores_are_not_averaged_away(model, feature_extractor):
    inputs = feature_extractor(np.full(30000, 0.1, np.float32), sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs, window_scorer=lambda windows: torch.full((windows.shape[0],), float("nan")))
    assert torch.isnan(out.mos).all()
    nan_scorer = DistillMOSScorer(model, feature_extractor, window_scorer=lambda w: torch.full((w.shape[0],), float("nan")))
    [result] = nan_scorer.score_clips([np.full(30000, 0.1, np.float32)])
    assert result == ScoringFailure("scoring gave a non-finite score")


def test_half_precision_window_scores_aggregate_in_float32(model, feature_extractor):
    """float16 window scores (as --half gives) are averaged in float32: the mean of 14 scores from 0.7 to 0.85 computed
    in float16 is off by 1.5e-3 MOS here (float16 steps are 2**-8 near 4)."""
    inputs = feature_extractor(np.full(16000 * 20, 0.1, np.float32), sampling_rate=16000, return_tensors="pt")
    values = (0.7 + 0.0117 * torch.arange(14, dtype=torch.float64)).half()  # one per window, in order
    given = []

    def half_scorer(windows):
        given.append(windows.shape[0])
        return values[sum(given) - windows.shape[0] : sum(given)]

    with torch.inference_mode():
        out = model(**inputs, window_scorer=half_scorer)
    assert sum(given) == 14  # 20 s: 14 windows, 1 s apart at most
    expected = 1 + 4 * values.double().mean().item()
    in_half = (1 + 4 * (values.sum() / 14)).item()  # what aggregating in float16 gives
    assert abs(in_half - expected) > 1e-3  # the input tells the two apart
    assert out.mos.dtype == torch.float32 and out.window_start_times.dtype == torch.float32
    assert out.mos.item() == pytest.approx(expected, abs=1e-5)
    assert out.window_scores[0].tolist() == pytest.approx((1 + 4 * values.double()).tolist(), abs=1e-5)


def test_reversed_array_is_scored_like_a_copy(scorer):
    clip = soundfile.read(DIR3 / "lpcnq.wav", dtype="float32")[0]
    assert scorer.score_array(clip[::-1], 16000).mos == pytest.approx(scorer.score_array(clip[::-1].copy(), 16000).mos, abs=1e-6)


def test_window_workers_do_not_leak_their_thread_setting(model):
    before = torch.get_num_threads()
    # worker threads need at least two intra-op threads; on a one-core machine ask for two rather than skip
    torch.set_num_threads(max(2, before))
    try:
        _check_thread_setting_is_kept(model)
    finally:
        torch.set_num_threads(before)


def _check_thread_setting_is_kept(model):
    caller = torch.get_num_threads()
    seen = []

    def started_meanwhile():
        time.sleep(0.05)
        seen.append(torch.get_num_threads())

    windows = torch.randn(2 * caller, 122880) * 0.1
    with torch.inference_mode():
        reference = model._score_window_batch(windows)
        thread = threading.Thread(target=started_meanwhile)
        thread.start()
        parallel = model.score_windows(windows)
        thread.join()
    assert seen == [caller] and torch.get_num_threads() == caller
    torch.testing.assert_close(parallel, reference, atol=1e-5, rtol=0)
