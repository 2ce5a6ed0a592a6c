"""Failures stay with the clip or file that caused them; nothing turns into a silently wrong score."""

import threading
import time

import numpy as np
import pytest
import soundfile
import torch
from conftest import GENSPEECH

from distill_mos import DistillMOSScorer
from distill_mos.cli import main

DIR3 = GENSPEECH / "audio/LPCNet_listening_test/mfall/dir3"


def test_unresamplable_rate_is_that_files_error(capsys, tmp_path):
    odd = tmp_path / "odd_rate.wav"
    soundfile.write(odd, soundfile.read(DIR3 / "ref.wav", dtype="float32")[0][:8001], 8001)
    out = tmp_path / "out.csv"
    code = main([str(DIR3 / "speex.wav"), str(odd), str(DIR3 / "opus.wav"), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: {odd}: a sampling rate of 8001 Hz cannot be resampled" in err
    rows = out.read_text().splitlines()
    assert len(rows) == 4 and rows[1].split(",")[1] and not rows[2].split(",")[1] and rows[3].split(",")[1]


class _FailsOnOneClip(DistillMOSScorer):
    """Scoring raises (as an out-of-memory would) whenever the batch holds the clip of length 12345."""

    def score_prepared(self, waveforms):
        if any(len(w) == 12345 for w in waveforms):
            raise RuntimeError("simulated out of memory")
        return super().score_prepared(waveforms)


def test_a_failing_batch_only_costs_the_failing_clip(model, feature_extractor, scorer):
    flaky = _FailsOnOneClip(model, feature_extractor)
    good = soundfile.read(DIR3 / "melp.wav", dtype="float32")[0]
    scores = flaky.score_prepared_each([good, np.full(12345, 0.1, np.float32), good[:20000]])
    assert scores[1] == "scoring failed: RuntimeError: simulated out of memory"
    assert scores[0].mos == pytest.approx(scorer.score_array(good, 16000).mos, abs=1e-5)
    assert scores[2].mos == pytest.approx(scorer.score_array(good[:20000], 16000).mos, abs=1e-5)


def test_nan_window_scores_are_not_averaged_away(model, feature_extractor):
    inputs = feature_extractor(np.full(30000, 0.1, np.float32), sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs, window_scorer=lambda windows: torch.full((windows.shape[0],), float("nan")))
    assert torch.isnan(out.mos).all()
    nan_scorer = DistillMOSScorer(model, feature_extractor, window_scorer=lambda w: torch.full((w.shape[0],), float("nan")))
    [result] = nan_scorer.score_prepared_each([np.full(30000, 0.1, np.float32)])
    assert result == "scoring gave a non-finite score"


def test_half_precision_window_scores_aggregate_in_float32(model, feature_extractor):
    inputs = feature_extractor(np.full(16000 * 20, 0.1, np.float32), sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs, window_scorer=lambda w: model.score_windows(w).half())
    assert out.mos.dtype == torch.float32 and out.window_start_times.dtype == torch.float32


def test_reversed_array_is_scored_like_a_copy(scorer):
    clip = soundfile.read(DIR3 / "lpcnq.wav", dtype="float32")[0]
    assert scorer.score_array(clip[::-1], 16000).mos == pytest.approx(scorer.score_array(clip[::-1].copy(), 16000).mos, abs=1e-6)


def test_window_workers_do_not_leak_their_thread_setting(model):
    if torch.get_num_threads() < 2:
        pytest.skip("one intra-op thread: windows are scored in the calling thread")
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
