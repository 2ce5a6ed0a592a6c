"""
Live scoring API (issue 18 §1, §4): `distill_mos.stream.StreamScorer` on a file streamed in chunks of 1, 160, 4096
and random sizes at 16 and 48 kHz, against the model's score of the same windows cut from the file resampled
offline (<= 1e-5), and on bad input.
"""

import glob

import numpy as np
import pytest
import soundfile

from conftest import ROOT
from distill_mos.stream import StreamingResampler, StreamScorer
from feature_extraction_distillmos import resample

FILES = sorted(glob.glob(str(ROOT / "tests" / "data" / "tcdvoip" / "audio" / "**" / "*.wav"), recursive=True))
HOP = 2.0  # seconds: partial updates at 2, 4, 6 s and windows starting at 0 and 2 s on 10 s of audio


@pytest.fixture(scope="module")
def speech_48k():
    """10 s of 48 kHz speech (two TCD-VoIP clips, first channel)."""
    parts = [soundfile.read(f, dtype="float32", always_2d=True)[0][:, 0] for f in FILES[:2]]
    assert soundfile.info(FILES[0]).samplerate == 48000
    return np.concatenate(parts)[: 10 * 48000]


def chunked(x: np.ndarray, size, seed: int = 0):
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(x):
        n = int(rng.integers(1, 20000)) if size == "random" else size
        yield x[i : i + n]
        i += n


def stream(scorer, x, rate, size):
    live = StreamScorer(scorer, hop_seconds=HOP)
    updates = []
    for chunk in chunked(x, size):
        updates += live.push(chunk, rate)
    summary = live.flush()
    return updates + summary.updates, summary


def offline_reference(scorer, x, rate):
    """(end s, score) of the short-clip updates and (start s, score) of the windows, cut from the offline path."""
    whole = scorer.prepare(x, rate)  # the offline resampling of the whole file
    hop, window = int(HOP * 16000), 122880
    partial_ends = list(range(hop, window, hop))
    starts = list(range(0, len(whole) - window + 1, hop))
    pieces = [whole[:end] for end in partial_ends] + [whole[s : s + window] for s in starts]
    scores = [s.mos for s in scorer.score_prepared(pieces)]
    return (
        [(end / 16000, score) for end, score in zip(partial_ends, scores)],
        [(s / 16000, score) for s, score in zip(starts, scores[len(partial_ends) :])],
    )


@pytest.fixture(scope="module")
def references(scorer, speech_48k):
    at_16k = resample(speech_48k, 48000, 16000)
    return {48000: (speech_48k, offline_reference(scorer, speech_48k, 48000)), 16000: (at_16k, offline_reference(scorer, at_16k, 16000))}


@pytest.mark.parametrize("rate", [48000, 16000])
@pytest.mark.parametrize("size", [1, 160, 4096, "random"])
def test_streamed_windows_score_as_the_model_scores_the_same_samples(scorer, references, rate, size):
    x, (partials, windows) = references[rate]
    updates, summary = stream(scorer, x, rate, size)
    got_partials = [(u.end, u.score) for u in updates if u.partial]
    got_windows = [(u.start, u.score) for u in updates if not u.partial]
    assert [t for t, _ in got_partials] == pytest.approx([t for t, _ in partials])
    assert [t for t, _ in got_windows] == pytest.approx([t for t, _ in windows])
    assert len(got_windows) == 2  # windows starting at 0 and 2 s of 10 s
    assert np.abs(np.subtract([s for _, s in got_partials], [s for _, s in partials])).max() <= 1e-5
    assert np.abs(np.subtract([s for _, s in got_windows], [s for _, s in windows])).max() <= 1e-5
    # time order; running MOS = mean of the windows so far; the end of a full window is its start + 7.68 s
    assert [u.end for u in updates] == sorted(u.end for u in updates)
    full = [u for u in updates if not u.partial]
    for k, u in enumerate(full, 1):
        assert u.running_mos == pytest.approx(np.mean([w.score for w in full[:k]]), abs=1e-9) and u.windows == k
        assert u.end - u.start == pytest.approx(7.68)
    # flush: the stream's score is the mean of the windows emitted
    assert summary.mos == pytest.approx(np.mean([s for _, s in windows]), abs=1e-5)
    assert summary.duration == pytest.approx(10.0, abs=1e-3) and summary.sampling_rate == rate


def test_incremental_resampling_equals_resampling_the_whole_file(speech_48k):
    whole = resample(speech_48k, 48000, 16000)
    for size in (1, 333, 4096):
        if size == 1:
            x = speech_48k[: 48000]  # a sample at a time is slow in Python: one second of it
            expected = resample(x, 48000, 16000)
        else:
            x, expected = speech_48k, whole
        r = StreamingResampler(48000, 16000)
        got = np.concatenate([r.push(c) for c in chunked(x, size)] + [r.finish()])
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-6  # float32 rounding of the convolution's summation order
    r = StreamingResampler(44100, 16000)  # a rate whose gcd with 16 kHz is small: many phases
    x = speech_48k[:44100]
    got = np.concatenate([r.push(c) for c in chunked(x, 1000)] + [r.finish()])
    assert np.abs(got - resample(x, 44100, 16000)).max() <= 1e-6


def test_a_stream_shorter_than_a_window_scores_as_the_file(scorer, speech_48k):
    x = speech_48k[: 3 * 48000 + 17]  # stops mid-hop
    live = StreamScorer(scorer, hop_seconds=1.0)
    updates = [u for c in chunked(x, 4096) for u in live.push(c, 48000)]
    summary = live.flush()
    updates += summary.updates  # the 3 s update needs the resampler's look-ahead, which only the end provides
    assert [u.end for u in updates] == [1.0, 2.0, 3.0] and all(u.partial for u in updates)
    assert summary.windows == 0 and summary.mos == pytest.approx(scorer.score_array(x, 48000).mos, abs=1e-5)


def test_integer_pcm_and_stereo_chunks(scorer, speech_48k):
    x = speech_48k[3 * 48000 : 5 * 48000]
    pcm = np.round(x * 32767).astype(np.int16)
    stereo = np.stack([pcm, np.zeros_like(pcm)], axis=1)  # the first channel is scored, as for files
    live = StreamScorer(scorer, hop_seconds=1.0)
    got = [u for c in np.array_split(stereo, 7) for u in live.push(c, 48000)]
    (expected,) = scorer.score_prepared([scorer.prepare(pcm, 48000)[:16000]])  # the 1 s update: its first second
    assert got[0].end == 1.0 and got[0].score == pytest.approx(expected.mos, abs=1e-5)
    assert live.channels == 2


def test_rate_or_channel_change_mid_stream_is_an_error_that_says_so(scorer, speech_48k):
    live = StreamScorer(scorer)
    live.push(speech_48k[:4800], 48000)
    with pytest.raises(ValueError, match=r"sampling rate changed from 48000 Hz to 44100 Hz at 0\.\d\d s"):
        live.push(speech_48k[:4800], 44100)
    with pytest.raises(ValueError, match="channel count changed from 1 to 2"):
        live.push(np.zeros((4800, 2), np.float32), 48000)
    live.push(speech_48k[4800:9600], 48000)  # the stream goes on after a refused chunk
    assert live.flush().duration == pytest.approx(0.2, abs=1e-3)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_samples_are_refused_with_where_they_are(scorer, speech_48k, bad):
    live = StreamScorer(scorer)
    live.push(speech_48k[:48000], 48000)
    chunk = speech_48k[48000:52800].copy()
    chunk[10] = bad
    with pytest.raises(ValueError, match=r"the chunk at 1\.00 s contains 1 NaN or infinite sample"):
        live.push(chunk, 48000)


def test_silence_and_clipping_are_warned(scorer):
    live = StreamScorer(scorer, hop_seconds=1.0)
    (silent,) = live.push(np.zeros(16000, np.float32), 16000)
    assert "silent" in silent.warning
    clipped = np.clip(3 * np.sin(np.arange(16000) / 3), -1, 1).astype(np.float32)
    (loud,) = live.push(clipped, 16000)
    assert loud.warning.startswith("clipping:")
    assert live.flush().warning == "some windows are silent; some windows clip"


def test_streams_share_nothing(scorer, speech_48k):
    """Two streams side by side (and one after another) give what each gives alone: no state leaks."""
    a, b = StreamScorer(scorer), StreamScorer(scorer)
    got_a = [u.score for c in chunked(speech_48k[:2 * 48000], 4800) for u in a.push(c, 48000)]
    got_b = [u.score for c in chunked(np.zeros(32000, np.float32), 1600) for u in b.push(c, 16000)]
    alone = StreamScorer(scorer)
    assert got_a == pytest.approx([u.score for c in chunked(speech_48k[:2 * 48000], 4800) for u in alone.push(c, 48000)], abs=1e-6)
    assert len(got_b) == 2 and a.sampling_rate == 48000 and b.sampling_rate == 16000
    a.flush()
    with pytest.raises(ValueError, match="flushed"):
        a.push(speech_48k[:10], 48000)
