# Copyright the Distill-MOS for Hugging Face contributors (MIT licence).
"""Feature extractor for Distill-MOS: validates, converts, resamples and pads raw waveforms."""

import functools
import math
import warnings

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType

# Told about all-zero clips, after their name ("clip 2 ...", "the clip ...", a file name).
SILENT_MESSAGE = "is silent (all samples are zero); its score is finite but says nothing about speech."

# Full scale of integer PCM, as decoders (soundfile, torchaudio) map it to [-1, 1).
_PCM_SCALE = {np.dtype(np.int8): 2.0**7, np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}


# torchaudio's sinc resampler (the original's) builds a kernel of `new / gcd` phases x `orig / gcd + 2 * width` taps
# and spends that many taps on every output sample. Rates that share no large factor with 16 kHz (8001 Hz, a forged
# header's 800144 Hz) would need gigabytes of kernel and hours of compute, so both are bounded. Every usual rate
# (8-384 kHz, 11.025 / 22.05 / 44.1 / 88.2 kHz included) costs at most ~0.3 M kernel values and ~500 taps a sample.
MAX_RESAMPLING_KERNEL = 2_000_000  # float32 values: 8 MB, plus torchaudio's float64 temporaries while building it
MAX_RESAMPLING_TAPS = 4_000  # multiply-adds per output sample
# Rates outside these bounds are damage or a mistake: no speech is recorded under 4 kHz (a 1 Hz header would make
# 32 KB a 16,000 s clip), and WAV, FLAC and the other formats store a rate in 32 bits at most.
MIN_SAMPLING_RATE, MAX_SAMPLING_RATE = 4000, 2**31 - 1
MAX_RESAMPLING_WORK = 10**12  # multiply-adds for the whole clip: ~37 h of 44.1 kHz audio, minutes of CPU


def resampling_cost(orig_freq: int, new_freq: int, num_samples: int) -> tuple[int, int, int]:
    """(kernel values, taps per output sample, total multiply-adds) of resampling `num_samples` samples."""
    gcd = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // gcd, new_freq // gcd
    # as torchaudio's _get_sinc_resample_kernel (lowpass_filter_width=6, rolloff=0.99)
    width = math.ceil(6 * orig / (min(orig, new) * 0.99))
    taps = orig + 2 * width
    output_samples = math.ceil(num_samples * new_freq / orig_freq)
    return new * taps, taps, output_samples * taps


def _check_resampling_cost(orig_freq: int, new_freq: int, num_samples: int) -> None:
    kernel, taps, work = resampling_cost(orig_freq, new_freq, num_samples)
    convert = f"convert the audio first, e.g. `ffmpeg -i in.wav -ar {new_freq} out.wav`"
    if kernel > MAX_RESAMPLING_KERNEL or taps > MAX_RESAMPLING_TAPS:
        raise ValueError(
            f"a sampling rate of {orig_freq} Hz cannot be resampled to {new_freq} Hz at a sane cost (the rates share no "
            f"large common factor: a {kernel / 1e6:.1f} M-value kernel, {taps} taps a sample); {convert}."
        )
    if work > MAX_RESAMPLING_WORK:
        raise ValueError(
            f"resampling {num_samples / orig_freq:.0f} s of audio from {orig_freq} Hz to {new_freq} Hz would take "
            f"{work / 1e9:.0f} G multiply-adds; {convert}, or score it in parts."
        )


@functools.lru_cache(maxsize=16)
def _resampler(orig_freq: int, new_freq: int):
    # Imported lazily, and inside try so that transformers' remote-code import check does not require torchaudio:
    # 16 kHz input never needs it.
    try:
        import torchaudio
    except ImportError:
        raise ImportError(
            f"resampling {orig_freq} Hz audio to {new_freq} Hz needs torchaudio (`pip install torchaudio`), or pass "
            f"audio at {new_freq} Hz."
        ) from None
    # Default arguments, exactly as the original CLI's `torchaudio.transforms.Resample(sr, 16000)`.
    return torchaudio.transforms.Resample(orig_freq, new_freq)


def resample(waveform: np.ndarray, orig_freq: int, new_freq: int, name: str = "the clip") -> np.ndarray:
    """
    Resample a float32 mono waveform (samples,) with torchaudio's sinc interpolation (the original's choice).
    Raises a ValueError for rates whose resampling would cost unbounded memory or time, and for results that are not
    finite (input near float32's limits overflows in the filter).
    """
    if orig_freq == new_freq:
        return waveform
    _check_resampling_cost(orig_freq, new_freq, waveform.shape[0])
    with torch.inference_mode():
        resampled = _resampler(orig_freq, new_freq)(torch.from_numpy(waveform)[None])[0].numpy()
    if not np.isfinite(resampled).all():
        raise ValueError(_overflow_message(name, float(np.abs(waveform).max()), orig_freq, new_freq))
    return resampled


class StreamingResampler:
    """
    `resample` applied block by block: push (samples,) float32 blocks of one clip in order, then `finish()`; the
    outputs, concatenated, are what `resample` gives for the whole clip at once (the same torchaudio kernel on the
    same zero-padded signal, output frame by output frame), with memory bounded by the block size, not the clip's.

    torchaudio resamples by a strided convolution: output frame `j` (`new / gcd` samples) reads the input samples
    `[j * orig - width, j * orig + orig + width)` of the signal padded with `width` zeros on the left and
    `width + orig` on the right. So a frame is computed as soon as its last input sample is in, and `orig + 2 * width`
    samples of context are all that is kept between blocks.
    """

    def __init__(self, orig_freq: int, new_freq: int, name: str = "the clip"):
        self.orig_freq, self.new_freq, self.name = orig_freq, new_freq, name
        self.length, self.peak, self.emitted = 0, 0.0, 0
        if orig_freq == new_freq:
            return
        _check_resampling_cost(orig_freq, new_freq, 0)
        transform = _resampler(orig_freq, new_freq)
        self.kernel, self.width = transform.kernel, transform.width
        self.stride = orig_freq // transform.gcd  # input samples per output frame
        self.frame = new_freq // transform.gcd  # output samples per frame
        self.pending = torch.zeros(self.width)  # the left padding, then inputs not yet consumed by a whole frame

    def push(self, block: np.ndarray) -> np.ndarray:
        """Resamples the next (samples,) float32 block; returns the output samples now complete (maybe none)."""
        self.length += block.shape[0]
        if block.shape[0]:
            self.peak = max(self.peak, float(np.abs(block).max()))
        if self.orig_freq == self.new_freq:
            return block
        _check_resampling_cost(self.orig_freq, self.new_freq, self.length)
        self.pending = torch.cat([self.pending, torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))])
        return self._frames()

    def finish(self) -> np.ndarray:
        """The last output samples (the right padding's frames), cut to torchaudio's length for the whole clip."""
        if self.orig_freq == self.new_freq:
            return np.zeros(0, np.float32)
        self.pending = torch.cat([self.pending, torch.zeros(self.width + self.stride)])
        out = self._frames()
        # torchaudio's own expression (float32 rounding of long clips' lengths included)
        target = int(torch.ceil(torch.as_tensor(self.frame * self.length / self.stride)).long())
        return out[: max(0, target - (self.emitted - out.shape[0]))]

    def _frames(self) -> np.ndarray:
        taps = self.kernel.shape[-1]
        count = (self.pending.shape[0] - taps) // self.stride + 1 if self.pending.shape[0] >= taps else 0
        if count == 0:
            return np.zeros(0, np.float32)
        with torch.inference_mode():
            used = self.pending[: (count - 1) * self.stride + taps]
            out = torch.nn.functional.conv1d(used[None, None], self.kernel, stride=self.stride)
            out = out.transpose(1, 2).reshape(-1).numpy()
        self.pending = self.pending[count * self.stride :].clone()  # drop the consumed samples' storage
        self.emitted += out.shape[0]
        if not np.isfinite(out).all():
            raise ValueError(_overflow_message(self.name, self.peak, self.orig_freq, self.new_freq))
        return out


def _overflow_message(name: str, peak: float, orig_freq: int, new_freq: int) -> str:
    return (
        f"{name} overflowed while resampling from {orig_freq} Hz to {new_freq} Hz: its samples reach {peak:.3g}, "
        "far outside [-1, 1] (float audio must be scaled to [-1, 1]); rescale it."
    )


def check_sampling_rate(sampling_rate) -> int:
    """Returns `sampling_rate` as a positive int, or raises a ValueError that says what is wrong."""
    if sampling_rate is None:
        raise ValueError(
            "sampling_rate is required: pass the rate the audio was recorded at, e.g. sampling_rate=16000 "
            "(audio at other rates is resampled to 16 kHz)."
        )
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, float, np.integer, np.floating)):
        raise ValueError(f"sampling_rate must be a number of samples per second, got {sampling_rate!r}.")
    finite = math.isfinite(sampling_rate)  # math: numpy cannot take a Python int past 64 bits (2**64)
    if not finite or sampling_rate <= 0 or int(sampling_rate) != sampling_rate:
        raise ValueError(f"sampling_rate must be a positive whole number of Hz, got {sampling_rate!r}.")
    if sampling_rate < MIN_SAMPLING_RATE:
        raise ValueError(
            f"a sampling rate of {int(sampling_rate)} Hz is below {MIN_SAMPLING_RATE} Hz, which no speech recording "
            "uses; refused rather than resampled into a much longer clip (pass the rate the audio was recorded at)."
        )
    if sampling_rate > MAX_SAMPLING_RATE:
        raise ValueError(
            f"a sampling rate of {int(sampling_rate)} Hz is above {MAX_SAMPLING_RATE} Hz, the largest any audio format "
            "stores; pass the rate the audio was recorded at."
        )
    return int(sampling_rate)


# What makes a clip's score less trustworthy, said after the clip's name ("the clip is very short ..."); files get
# the same sentences from distill_mos.audio (which this Hub file cannot import).
SHORT_SECONDS, WINDOW_SECONDS = 1.0, 7.68


def clip_warnings(waveform: np.ndarray, sampling_rate: int) -> list[str]:
    """Warnings for a float32 (samples,) clip: very short (under 1 s), or constant (a DC level, not speech)."""
    notes = []
    duration = waveform.shape[0] / sampling_rate
    if duration < SHORT_SECONDS:
        notes.append(
            f"is very short ({duration:.2f} s); the model scores {WINDOW_SECONDS:g} s windows, so this score is less "
            "reliable"
        )
    low, high = float(waveform.min()), float(waveform.max())
    if low == high != 0.0:
        notes.append(f"is constant (every sample is {low:.3g}): a DC level, not speech, so its score says nothing")
    return notes


def to_float_waveform(clip, name: str = "the clip") -> np.ndarray:
    """
    Converts one mono clip (numpy array, torch tensor or list of numbers; float, or integer PCM) to a float32 numpy
    array of shape (samples,) in [-1, 1], rejecting input that would give a meaningless score.
    """
    if isinstance(clip, torch.Tensor):
        clip = clip.detach().cpu()
        clip = clip.float().numpy() if clip.dtype in (torch.bfloat16, torch.float16) else clip.numpy()
    elif isinstance(clip, (list, tuple)):
        clip = np.asarray(clip)
        if clip.dtype.kind in "iub":  # Python ints carry no bit depth, so their scale cannot be known
            raise ValueError(
                f"{name} is a list of integers, whose bit depth is unknown; pass a numpy array of dtype int16 or "
                "int32 (integer PCM) or of floats in [-1, 1]."
            )
    elif not isinstance(clip, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, a torch tensor or a list of numbers, got {type(clip).__name__}.")

    if clip.ndim != 1:
        hint = ""
        if clip.ndim == 2 and clip.shape[1] < clip.shape[0]:  # (samples, channels), as soundfile.read returns
            hint = (
                " It looks like (samples, channels), as soundfile.read returns: pick one channel (x[:, 0]) or "
                "average them (x.mean(axis=1))."
            )
        elif clip.ndim == 2:
            hint = (
                " For multi-channel (channels, samples) audio pick one channel (x[0]) or average them "
                "(x.mean(axis=0)); for a batch pass a list of 1-D clips."
            )
        raise ValueError(f"{name} must be a 1-D mono waveform, got an array of shape {clip.shape}.{hint}")
    if clip.size == 0:
        raise ValueError(f"{name} is empty (0 samples): there is no audio to score.")

    if clip.dtype.kind == "f":
        waveform = np.ascontiguousarray(clip, dtype=np.float32)  # also undoes negative strides (x[::-1])
    elif clip.dtype in _PCM_SCALE:
        waveform = (clip.astype(np.float32) / _PCM_SCALE[clip.dtype]).astype(np.float32)
    elif clip.dtype == np.uint8:  # 8-bit PCM is unsigned, centred at 128
        waveform = (clip.astype(np.float32) - 128.0) / 128.0
    else:
        raise ValueError(
            f"{name} has unsupported sample type {clip.dtype}; use float (16, 32 or 64 bit) in [-1, 1] "
            "or integer PCM (uint8, int8, int16, int32)."
        )

    finite = np.isfinite(waveform)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} contains {bad.size} NaN or infinite sample(s) (first at sample {bad[0]}); "
            "the score would be meaningless. Repair or drop the clip."
        )
    return waveform


class DistillMOSFeatureExtractor(SequenceFeatureExtractor):
    r"""
    Prepares raw speech for [`DistillMOSModel`]: one clip or a list of clips of any lengths (numpy arrays, torch
    tensors or lists; float in [-1, 1], or integer PCM), validated, converted to float32, resampled to 16 kHz and
    right-padded with zeros into `input_values` of shape `(batch, samples)` with an `attention_mask`.

    Audio at another rate is resampled with `torchaudio.transforms.Resample(sampling_rate, 16000)`, as the original
    `distillmos` command line tool does, so that scores match it; set `resample=False` to refuse such audio instead.
    The model peak-normalizes each window itself, so no normalization happens here.

    Args:
        feature_size (`int`, defaults to 1): values per time step (mono).
        sampling_rate (`int`, defaults to 16000): the model's rate, in Hz.
        padding_value (`float`, defaults to 0.0): value of padded samples (the model expects zeros).
        return_attention_mask (`bool`, defaults to `True`): whether to return the attention mask; the model needs it
            for batches of clips of different lengths.
        resample (`bool`, defaults to `True`): resample audio at other rates; if False such audio raises a ValueError.
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        padding_value: float = 0.0,
        return_attention_mask: bool = True,
        resample: bool = True,
        **kwargs,
    ):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.return_attention_mask = return_attention_mask
        self.resample = resample

    def prepare_clip(self, clip, sampling_rate: int, name: str = "the clip") -> np.ndarray:
        """
        Validates one mono clip, converts it to float32 and resamples it to `self.sampling_rate`: (samples,).
        Raises a ValueError naming `name` and the problem for input that cannot be scored.
        """
        sampling_rate = check_sampling_rate(sampling_rate)
        if sampling_rate != self.sampling_rate and not self.resample:
            raise ValueError(
                f"{name} is at {sampling_rate} Hz but the model expects {self.sampling_rate} Hz and resampling is "
                "off (resample=False)."
            )
        waveform = to_float_waveform(clip, name)
        for message in clip_warnings(waveform, sampling_rate):
            warnings.warn(f"{name} {message}", UserWarning, stacklevel=3)
        return resample(waveform, sampling_rate, self.sampling_rate, name)

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        padding: bool | str | PaddingStrategy = True,
        return_tensors: str | TensorType | None = None,
        return_attention_mask: bool | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            raw_speech (`np.ndarray`, `torch.Tensor`, `list[float]`, or a list of those): one mono clip of shape
                `(samples,)` or a list of clips. A 2-D array is refused rather than guessed at: pass a list of clips
                for a batch, or pick a channel of multi-channel audio.
            sampling_rate (`int` or `list[int]`): rate of `raw_speech` in Hz (required): one for all clips, or one per
                clip; each clip is resampled to 16 kHz on its own.
            padding (`bool` or `str`, defaults to `True`): pad to the longest clip (`True`/`"longest"`), or as
                [`~SequenceFeatureExtractor.pad`] accepts.
            return_tensors (`str`, *optional*): `"pt"` for PyTorch tensors, `"np"` for numpy arrays.
            return_attention_mask (`bool`, *optional*): defaults to `self.return_attention_mask`.

        Returns:
            [`BatchFeature`] with `input_values` `(batch, samples)` float32 at 16 kHz and `attention_mask`
            `(batch, samples)` int32.
        """
        is_batch = isinstance(raw_speech, (list, tuple)) and len(raw_speech) > 0 and not np.isscalar(raw_speech[0])
        clips = list(raw_speech) if is_batch else [raw_speech]
        if len(clips) == 0 or (isinstance(raw_speech, (list, tuple)) and len(raw_speech) == 0):
            raise ValueError("No audio given: raw_speech is an empty list.")
        if isinstance(sampling_rate, (list, tuple, np.ndarray)):
            if len(sampling_rate) != len(clips):
                raise ValueError(
                    f"got {len(clips)} clip(s) but {len(sampling_rate)} sampling rates; give one rate for all clips "
                    "or one per clip."
                )
            rates = [check_sampling_rate(rate) for rate in sampling_rate]
        else:
            rates = [check_sampling_rate(sampling_rate)] * len(clips)

        waveforms = []
        for index, (clip, rate) in enumerate(zip(clips, rates)):
            name = f"clip {index}" if is_batch else "the clip"
            waveform = self.prepare_clip(clip, rate, name)
            if not waveform.any():
                warnings.warn(
                    f"{name} {SILENT_MESSAGE}",
                    UserWarning,
                    stacklevel=2,
                )
            waveforms.append(waveform)

        padded = self.pad(
            BatchFeature({"input_values": waveforms}),
            padding=padding,
            return_attention_mask=self.return_attention_mask if return_attention_mask is None else return_attention_mask,
            **kwargs,
        )
        if len({len(values) for values in padded["input_values"]}) == 1:  # else padding=False kept ragged clips
            padded["input_values"] = np.asarray(padded["input_values"], dtype=np.float32)
            if padded.get("attention_mask") is not None:
                padded["attention_mask"] = np.asarray(padded["attention_mask"], dtype=np.int32)
        if return_tensors is not None:
            padded = padded.convert_to_tensors(return_tensors)
        return padded


__all__ = ["DistillMOSFeatureExtractor"]
