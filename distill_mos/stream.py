"""
Live scoring: a quality meter for streams, calls and microphones.

    from distill_mos import DistillMOSScorer
    from distill_mos.stream import StreamScorer

    stream = StreamScorer(DistillMOSScorer.from_pretrained(), hop_seconds=1.0)
    for chunk in chunks:                                   # any size, at the stream's rate (e.g. 48 kHz)
        for update in stream.push(chunk, 48000):
            print(update.end, update.score, update.running_mos)
    summary = stream.flush()                               # the stream's score: the mean of its windows

What is scored, exactly as the model scores a file: the stream is resampled to 16 kHz incrementally with the
offline path's own resampler (torchaudio's sinc kernel, `torchaudio.transforms.Resample(rate, 16000)`, as
`feature_extraction_distillmos.resample`), applied block by block with the kernel's full context kept between
chunks, so chunk boundaries change no sample of what the model sees. Every `hop_seconds` of audio one update:

- before 7.68 s (one analysis window) have arrived, the score of everything so far, as the model scores a short
  clip (`partial=True`);
- then the window of 7.68 s starting at each multiple of `hop_seconds` (0, 1, 2 ... s), emitted as soon as its last
  sample has arrived: its score is `scorer.score_prepared([window])[0].mos`, the model's score of those samples.

`running_mos` is the mean of the full windows so far (the model's clip score is the mean of its windows), or the
partial score before the first window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from feature_extraction_distillmos import _check_resampling_cost, _resampler, check_sampling_rate, to_float_waveform

from .scorer import DistillMOSScorer

SILENT_WARNING = "silent: every sample of this window is zero, its score says nothing about speech"
CLIPPING_LEVEL = 0.99  # |sample| at or above this (of full scale 1.0) counts as clipped
CLIPPING_SHARE = 0.001  # warn when more than 0.1% of a window's samples are clipped


@dataclass(frozen=True)
class StreamUpdate:
    """One update of a live stream: the score of one window (or, before 7.68 s, of all the audio so far)."""

    start: float  # seconds from the start of the stream
    end: float  # seconds; end - start is 7.68 for a full window
    score: float  # MOS of these samples, as the model scores them
    running_mos: float  # mean of the full windows so far (the partial score before the first one)
    windows: int  # full windows so far
    partial: bool = False  # True: fewer than 7.68 s so far, scored as a short clip
    warning: str | None = None  # silence or clipping in this window

    def as_dict(self) -> dict:
        return {
            "start": round(self.start, 4),
            "end": round(self.end, 4),
            "score": round(self.score, 6),
            "running_mos": round(self.running_mos, 6),
            "windows": self.windows,
            "partial": self.partial,
            "warning": self.warning,
        }


@dataclass(frozen=True)
class StreamSummary:
    """The end of a stream: its score and what was read."""

    mos: float | None  # mean of the full windows; the short clip's score when under 7.68 s; None for no audio
    windows: int
    duration: float  # seconds of audio received
    sampling_rate: int | None
    channels: int | None
    window_scores: list[float] = field(default_factory=list)
    window_start_times: list[float] = field(default_factory=list)
    warning: str | None = None
    updates: list[StreamUpdate] = field(default_factory=list)  # completed by the last samples, at `flush`

    def as_dict(self) -> dict:
        return {
            "summary": True,
            "mos": None if self.mos is None else round(self.mos, 6),
            "windows": self.windows,
            "duration": round(self.duration, 4),
            "sampling_rate": self.sampling_rate,
            "channels": self.channels,
            "warning": self.warning,
        }


class StreamingResampler:
    """
    torchaudio's sinc resampling (the offline path's, same kernel) applied to a stream block by block.

    torchaudio pads the whole signal with `width` zeros in front and `width + orig` behind (in units reduced by the
    rates' gcd) and convolves with stride `orig`; output block k (`new` samples) reads padded input
    [k * orig, k * orig + orig + 2 * width). Here each block is computed once its input has arrived, the input it
    still needs kept between chunks, and `finish` adds the trailing zeros and cuts the output to torchaudio's
    length, ceil(new * samples / orig): the concatenated output equals resampling the whole stream at once, to
    float32 rounding of the convolution's summation order (measured: tests/test_stream.py).
    """

    def __init__(self, orig_freq: int, new_freq: int):
        self.orig_freq, self.new_freq = orig_freq, new_freq
        self.identity = orig_freq == new_freq
        if not self.identity:
            _check_resampling_cost(orig_freq, new_freq, orig_freq)  # unusable rates are refused here, with a reason
            resampler = _resampler(orig_freq, new_freq)
            self.kernel, self.width = resampler.kernel, resampler.width
            self.orig, self.new = orig_freq // resampler.gcd, new_freq // resampler.gcd
            self._pending = torch.zeros(self.width)  # the leading zeros of torchaudio's padding
        self.samples_in = 0
        self.samples_out = 0

    def _blocks(self, padded: torch.Tensor) -> np.ndarray:
        span = self.orig + 2 * self.width
        count = (padded.shape[0] - span) // self.orig + 1 if padded.shape[0] >= span else 0
        if count <= 0:
            self._pending = padded
            return np.zeros(0, dtype=np.float32)
        used = padded[: (count - 1) * self.orig + span]
        with torch.inference_mode():
            out = torch.nn.functional.conv1d(used[None, None], self.kernel, stride=self.orig)
        self._pending = padded[count * self.orig :].clone()
        return out[0].transpose(0, 1).reshape(-1).numpy()

    def push(self, samples: np.ndarray) -> np.ndarray:
        """float32 (n,) at `orig_freq` -> the 16 kHz samples that are now final."""
        self.samples_in += samples.shape[0]
        if self.identity:
            out = samples
        else:
            out = self._blocks(torch.cat([self._pending, torch.from_numpy(samples)]))
        self.samples_out += out.shape[0]
        return out

    def finish(self) -> np.ndarray:
        """The last samples (the trailing zeros of torchaudio's padding), cut to torchaudio's output length."""
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        out = self._blocks(torch.cat([self._pending, torch.zeros(self.width + self.orig)]))
        target = math.ceil(self.new * self.samples_in / self.orig)
        out = out[: max(0, target - self.samples_out)]
        self.samples_out += out.shape[0]
        return out


class StreamScorer:
    """
    Scores a live stream every `hop_seconds` (see the module docstring). Not thread-safe: one per stream.

    Args:
        scorer: the library's scorer; every score is `scorer.score_prepared([samples])`.
        hop_seconds: seconds between updates (and between window starts), at least 1/16000.
    """

    def __init__(self, scorer: DistillMOSScorer, hop_seconds: float = 1.0):
        if not hop_seconds > 0:
            raise ValueError(f"hop_seconds must be a positive number of seconds, got {hop_seconds!r}.")
        self.scorer = scorer
        self.rate = scorer.sampling_rate  # 16 kHz
        self.window = round(scorer.model.config.window_seconds * self.rate)
        self.hop = max(1, round(hop_seconds * self.rate))
        self.sampling_rate: int | None = None
        self.channels: int | None = None
        self._resampler: StreamingResampler | None = None
        self._buffer = np.zeros(0, dtype=np.float32)  # 16 kHz samples from `_buffer_start` on
        self._buffer_start = 0
        self._received = 0  # 16 kHz samples so far
        self._next_partial = self.hop  # end (16 kHz samples) of the next short-clip update
        self._next_window = 0  # start of the next full window
        self._window_scores: list[float] = []
        self._window_starts: list[float] = []
        self._last_partial: float | None = None
        self._warnings: set[str] = set()
        self._finished = False
        self._gathered: list[np.ndarray] = []
        self._gathered_samples = 0
        self._gather = 1

    # --- input --------------------------------------------------------------------------------------------------

    @property
    def seconds(self) -> float:
        """Seconds of audio received (at 16 kHz, after resampling)."""
        return self._received / self.rate

    def _check_format(self, chunk: np.ndarray, sampling_rate: int) -> np.ndarray:
        sampling_rate = check_sampling_rate(sampling_rate)
        channels = 1 if chunk.ndim == 1 else chunk.shape[1] if chunk.ndim == 2 else None
        if channels is None or channels == 0:
            raise ValueError(f"a chunk must be (samples,) or (samples, channels), got an array of shape {chunk.shape}.")
        if self.sampling_rate is None:
            self._resampler = StreamingResampler(sampling_rate, self.rate)
            self.sampling_rate, self.channels = sampling_rate, channels
            self._gather = max(1, sampling_rate // 100)
        at = f"at {self.seconds:.2f} s"
        if sampling_rate != self.sampling_rate:
            raise ValueError(
                f"the stream's sampling rate changed from {self.sampling_rate} Hz to {sampling_rate} Hz {at}; "
                "a stream keeps one rate: start a new stream for the new format."
            )
        if channels != self.channels:
            raise ValueError(
                f"the stream's channel count changed from {self.channels} to {channels} {at}; a stream keeps one "
                "layout: start a new stream for the new format."
            )
        return chunk if chunk.ndim == 1 else chunk[:, 0]  # the first channel, as the library scores files

    def push(self, chunk, sampling_rate: int) -> list[StreamUpdate]:
        """
        Adds a chunk: (samples,) or (samples, channels) numpy array (float in [-1, 1] or integer PCM) at
        `sampling_rate` Hz, any number of samples (0 included). Returns the updates it completes, in time order.
        Raises ValueError for a chunk that cannot be scored (NaN, a rate or channel change): nothing of it is kept.
        """
        if self._finished:
            raise ValueError("this stream was flushed; start a new StreamScorer for a new stream.")
        chunk = np.asarray(chunk) if not isinstance(chunk, np.ndarray) else chunk
        mono = self._check_format(chunk, sampling_rate)
        if mono.shape[0] == 0:
            return []
        samples = to_float_waveform(mono, name=f"the chunk at {self.seconds:.2f} s")
        # tiny chunks (a sample at a time) are gathered into blocks of 10 ms first: the per-call cost of the
        # convolution and of growing the buffer would otherwise dominate; an update is delayed by 10 ms at most
        self._gathered.append(samples)
        self._gathered_samples += samples.shape[0]
        if self._gathered_samples < self._gather:
            return []
        return self._release()

    def _release(self) -> list[StreamUpdate]:
        block = self._gathered[0] if len(self._gathered) == 1 else np.concatenate(self._gathered)
        self._gathered, self._gathered_samples = [], 0
        return self._append(self._resampler.push(block))

    def flush(self) -> StreamSummary:
        """
        Ends the stream; `updates` of the summary are those the last (gathered) samples completed. Its score is the mean of the full windows emitted; a stream shorter than one window is
        scored whole, as the model scores a short clip (exactly the file's score).
        """
        updates = []
        if not self._finished and self._resampler is not None:
            updates = self._release() if self._gathered else []
            updates += self._append(self._resampler.finish())

        self._finished = True
        mos = None
        if self._window_scores:
            mos = float(np.mean(self._window_scores))
        elif self._received:
            (score,) = self.scorer.score_prepared([self._buffer])
            mos = score.mos
            self._warning(self._buffer)
        warnings = sorted(self._warnings)
        return StreamSummary(
            mos=mos,
            windows=len(self._window_scores),
            duration=self.seconds,
            sampling_rate=self.sampling_rate,
            channels=self.channels,
            window_scores=list(self._window_scores),
            window_start_times=list(self._window_starts),
            warning="; ".join(warnings) or None,
            updates=updates,
        )

    # --- scoring ------------------------------------------------------------------------------------------------

    def _append(self, samples: np.ndarray) -> list[StreamUpdate]:
        self._buffer = np.concatenate([self._buffer, samples]) if self._buffer.size else samples.copy()
        self._received += samples.shape[0]
        # what this chunk completes: short-clip updates before the first window, then whole windows
        partial_ends = []
        while self._next_partial < self.window and self._next_partial <= self._received:
            partial_ends.append(self._next_partial)
            self._next_partial += self.hop
        window_starts = []
        while self._next_window + self.window <= self._received:
            window_starts.append(self._next_window)
            self._next_window += self.hop
        if not partial_ends and not window_starts:
            return []
        pieces = [self._slice(0, end) for end in partial_ends] + [
            self._slice(start, start + self.window) for start in window_starts
        ]
        scores = self.scorer.score_prepared(pieces)  # one clip each: a window's score is its clip's score
        out = []
        for end, piece, score in zip(partial_ends, pieces, scores):
            self._last_partial = score.mos
            out.append(StreamUpdate(0.0, end / self.rate, score.mos, score.mos, 0, True, self._warning(piece)))
        for start, piece, score in zip(window_starts, pieces[len(partial_ends) :], scores[len(partial_ends) :]):
            self._window_scores.append(score.mos)
            self._window_starts.append(start / self.rate)
            running = float(np.mean(self._window_scores))
            out.append(StreamUpdate(
                start / self.rate, (start + self.window) / self.rate, score.mos, running,
                len(self._window_scores), False, self._warning(piece),
            ))
        self._trim()
        return out

    def _slice(self, start: int, end: int) -> np.ndarray:
        return self._buffer[start - self._buffer_start : end - self._buffer_start]

    def _trim(self) -> None:
        """Keeps only what a later window needs: memory stays bounded (one window and a hop) however long the stream."""
        keep_from = self._next_window if self._next_partial >= self.window else 0
        drop = keep_from - self._buffer_start
        if drop > 0:
            self._buffer = self._buffer[drop:].copy()
            self._buffer_start = keep_from

    def _warning(self, samples: np.ndarray) -> str | None:
        if not samples.any():
            warning = SILENT_WARNING
        else:
            clipped = float(np.mean(np.abs(samples) >= CLIPPING_LEVEL))
            if clipped <= CLIPPING_SHARE:
                return None
            warning = f"clipping: {100 * clipped:.1f}% of samples at full scale, the score is of the distorted audio"
        self._warnings.add("some windows are silent" if warning is SILENT_WARNING else "some windows clip")
        return warning
