"""
Input checks: is this audio what a speech-quality score means anything for?

    checks = check_audio(waveform, sampling_rate)         # the ORIGINAL-rate mono waveform, float in [-1, 1]
    checks.speech_share, checks.loudness_lufs, checks.clipped_share, checks.bandwidth_hz
    checks.warnings                                       # ["speech in 6% of the clip: ..."]

Each measurement comes from a well-kept library: speech from Silero VAD (`silero-vad`, whose wheel ships its
weights), loudness from pyloudnorm (ITU-R BS.1770-4 integrated loudness), the spectrum from SciPy's Welch estimate.
`pip install "distill-mos-hf[checks]"`. The thresholds below say where each one comes from.
"""

import threading
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from .columns import CHECK_COLUMNS

# Speech below this share of the clip gets a warning. ITU-T P.862.3 (the application guide of P.862, whose test
# signals the listening-test practice of P.800 shares) asks for speech activity between 40% and 80% of a test
# signal; a clip far below it is mostly silence or non-speech, and Distill-MOS, trained on rated speech, then scores
# the background rather than the talker.
MIN_SPEECH_SHARE = 0.4
# Integrated loudness below this (in LUFS) gets a warning: ITU-T P.800 listening tests present speech at about
# -26 dBov active speech level (roughly -26 LUFS); -50 LUFS is 24 dB below that. The model peak-normalises each
# window, so level alone does not move the score, but at such levels the hiss and quantisation noise it amplifies
# with the speech do. BS.1770 gates blocks below -70 LUFS: a clip with nothing above that has no loudness (-inf).
MIN_LOUDNESS_LUFS = -50.0
# Clipping: a sample counts as clipped when it lies in a run of at least CLIP_RUN equal samples at the clip's peak
# magnitude (a flat top; a sine's crest or speech's single loudest sample is not). More than MAX_CLIPPED_SHARE of
# the samples clipped gets a warning: measured on the bundled speech (tests/data, peak-normalised), clean clips have
# no such run; driven 6 dB into clipping they have 0.10-1.1% of their samples clipped, 12 dB into it 1.3-10.5%.
CLIP_RUN = 3
MAX_CLIPPED_SHARE = 0.001
# Effective bandwidth: the highest frequency whose long-term spectrum (Welch, original sampling rate) lies within
# BANDWIDTH_DYNAMIC_DB of the spectrum's peak. Narrowband (telephone) speech ends at 3.4-4 kHz, and once upsampled
# the resampler's stop band follows, 60 dB or more down; wideband speech keeps energy up to 7-8 kHz within 50 dB of
# its peak. Measured on the bundled clips (tests/data): 7.6-8.0 kHz for the 16 kHz GenSpeech clips, 7.2-12.7 kHz
# for the 48 kHz TCD-VoIP ones, 4.4 kHz for MELP (a narrowband codec); NARROWBAND_HZ = 5 kHz lies between. Audio at
# or below it gets a warning: Distill-MOS learnt from wideband-context ratings, where narrowband speech scores about
# one MOS lower than in a narrowband test (the reason ITU-T P.863 has separate narrowband and super-wideband modes).
BANDWIDTH_DYNAMIC_DB = 50.0
NARROWBAND_HZ = 5000.0
WIDEBAND_HZ = 8500.0
# Silero VAD works on 16 kHz (or 8 kHz) audio; its default settings.
VAD_RATE = 16000

_vad_model = None
_vad_lock = threading.Lock()  # the VAD keeps state between chunks: one clip at a time


@dataclass
class InputChecks:
    """
    What the input checks measured on one clip, and the warnings they give.

    Attributes:
        speech_share: share of the clip's duration that Silero VAD marks as speech, 0..1.
        loudness_lufs: ITU-R BS.1770 integrated loudness in LUFS (-inf: nothing above the -70 LUFS gate).
        clipped_share: share of samples in flat runs at the clip's peak magnitude (clipping), 0..1.
        bandwidth_hz: effective bandwidth of the original-rate audio, Hz (at most half its sampling rate).
        warnings: one sentence per check past its threshold.
    """

    speech_share: float
    loudness_lufs: float
    clipped_share: float
    bandwidth_hz: float
    warnings: list[str] = field(default_factory=list)

    @property
    def band(self) -> str:
        """narrowband (<= 5 kHz), wideband (<= 8.5 kHz) or fullband (more)."""
        if self.bandwidth_hz <= NARROWBAND_HZ:
            return "narrowband"
        return "wideband" if self.bandwidth_hz <= WIDEBAND_HZ else "fullband"

    def columns(self) -> dict:
        """The columns the CLI, datasets and Ray add (CHECK_COLUMNS), rounded for a table."""
        return {
            "speech_share": round(self.speech_share, 4),
            "loudness_lufs": round(self.loudness_lufs, 2) if np.isfinite(self.loudness_lufs) else None,
            "clipped_share": round(self.clipped_share, 6),
            "bandwidth_hz": round(self.bandwidth_hz),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_columns(cls, row: dict) -> "InputChecks | None":
        """Back from a row holding CHECK_COLUMNS (Ray's); None when the row has none (checks off, or no audio)."""
        if row.get("speech_share") is None:
            return None
        loudness = row.get("loudness_lufs")
        checks = cls(row["speech_share"], float("-inf") if loudness is None else loudness, row["clipped_share"],
                     row["bandwidth_hz"])
        checks.warnings = warnings_for(checks)
        return checks


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"the input checks need {module}: pip install 'distill-mos-hf[checks]' ({error})") from None


def require_checks() -> None:
    """Raises ImportError with the install hint when a package the checks need is missing."""
    for module in ("silero_vad", "pyloudnorm", "scipy"):
        _require(module)


def _vad():
    global _vad_model
    if _vad_model is None:
        silero_vad = _require("silero_vad")
        with warnings.catch_warnings():  # deprecation notices of torch.jit.load and importlib: silero-vad's to heed
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            _vad_model = silero_vad.load_silero_vad()
    return _vad_model


def speech_share(waveform_16k: np.ndarray) -> float:
    """Share of a 16 kHz clip, (samples,) float32, that Silero VAD marks as speech (its default settings)."""
    import torch
    from silero_vad import get_speech_timestamps

    if len(waveform_16k) == 0:
        return 0.0
    with _vad_lock, torch.inference_mode():
        segments = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(waveform_16k, dtype=np.float32)), _vad(),
                                         sampling_rate=VAD_RATE)
    return min(1.0, sum(s["end"] - s["start"] for s in segments) / len(waveform_16k))


def loudness_lufs(waveform: np.ndarray, sampling_rate: int) -> float:
    """ITU-R BS.1770 integrated loudness (pyloudnorm), LUFS; -inf when the clip is shorter than one 400 ms block."""
    pyloudnorm = _require("pyloudnorm")
    block = 0.4
    if len(waveform) < block * sampling_rate:
        return float("-inf")
    with np.errstate(divide="ignore"):
        return float(pyloudnorm.Meter(sampling_rate, block_size=block).integrated_loudness(waveform.astype(np.float64)))


def clipped_share(waveform: np.ndarray) -> float:
    """Share of samples in runs of at least CLIP_RUN equal-magnitude samples at the clip's peak (flat tops)."""
    magnitude = np.abs(waveform)
    peak = float(magnitude.max(initial=0.0))
    if peak == 0.0:
        return 0.0
    at_peak = magnitude >= peak * (1 - 1e-6)
    # run lengths of consecutive at-peak samples
    edges = np.diff(np.concatenate(([0], at_peak.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    return float(lengths[lengths >= CLIP_RUN].sum() / len(waveform))


def bandwidth_hz(waveform: np.ndarray, sampling_rate: int) -> float:
    """
    Effective bandwidth of `waveform` at its own sampling rate: the highest frequency (Hz) whose Welch power
    spectral density is within BANDWIDTH_DYNAMIC_DB of the peak of the spectrum.
    """
    from scipy.signal import welch

    nperseg = min(len(waveform), max(256, int(2 ** np.ceil(np.log2(sampling_rate * 0.032)))))
    if nperseg < 16 or not np.any(waveform):
        return 0.0
    frequencies, density = welch(waveform.astype(np.float64), fs=sampling_rate, nperseg=nperseg)
    with np.errstate(divide="ignore"):
        level = 10 * np.log10(density)
    above = np.flatnonzero(level >= level.max() - BANDWIDTH_DYNAMIC_DB)
    return float(frequencies[above[-1]])


def check_audio(waveform: np.ndarray, sampling_rate: int, waveform_16k: np.ndarray | None = None) -> InputChecks:
    """
    Runs every check on one mono clip: `waveform` (samples,) float in [-1, 1] at its ORIGINAL `sampling_rate` (Hz),
    so that the bandwidth is that of the audio and not of the resampling; `waveform_16k` the same clip at 16 kHz
    for the VAD (resampled with the library's resampler when not given).
    """
    from feature_extraction_distillmos import resample, to_float_waveform

    waveform = to_float_waveform(waveform, "the clip")  # integer PCM -> [-1, 1], as the scorer reads it
    if waveform_16k is None:
        waveform_16k = resample(waveform, sampling_rate, VAD_RATE)
    result = InputChecks(
        speech_share=speech_share(waveform_16k),
        loudness_lufs=loudness_lufs(waveform, sampling_rate),
        clipped_share=clipped_share(waveform),
        bandwidth_hz=bandwidth_hz(waveform, sampling_rate),
    )
    result.warnings = warnings_for(result)
    return result


def warnings_for(checks: InputChecks) -> list[str]:
    """The warning sentences for the checks past their thresholds."""
    found = []
    if checks.speech_share < MIN_SPEECH_SHARE:
        found.append(f"speech in {checks.speech_share:.0%} of the clip: the score says little about speech quality")
    if checks.loudness_lufs < MIN_LOUDNESS_LUFS:
        level = "no audible signal" if not np.isfinite(checks.loudness_lufs) else f"loudness {checks.loudness_lufs:.0f} LUFS"
        found.append(f"{level}, far below the -26 LUFS of listening tests: the score may rate the noise floor")
    if checks.clipped_share > MAX_CLIPPED_SHARE:
        found.append(f"{checks.clipped_share:.1%} of the samples are clipped: the score includes that distortion")
    if checks.bandwidth_hz <= NARROWBAND_HZ:
        found.append(
            f"audio band-limited to {checks.bandwidth_hz / 1000:.1f} kHz (narrowband, e.g. telephone speech): the model "
            "rates it against wideband speech, expect a lower score than a narrowband listening test gives"
        )
    return found


__all__ = ["CHECK_COLUMNS", "InputChecks", "check_audio", "warnings_for"]
