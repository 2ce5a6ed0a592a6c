"""
Distill-MOS without PyTorch: onnxruntime, numpy and soundfile only. Copy this file next to `model.onnx` (or
`model_fp16.onnx`) from the model repository's `onnx/` folder.

    pip install onnxruntime numpy soundfile
    python distill_mos_onnx.py speech.wav more.wav            # prints "<file>\t<MOS>" per file

    from distill_mos_onnx import DistillMOSOnnx
    scorer = DistillMOSOnnx("model.onnx")
    scorer.score_file("speech.wav").mos                        # 16 kHz audio files
    scorer.score(waveform).mos                                 # a 16 kHz mono float array

The ONNX file holds the per-window network (peak normalization, spectrogram, convolutions, transformer, pooling):
`windows` float32 (n, 122880) -> `scores` float32 (n,) in 0..1. This module does the rest exactly as the torch
model does: it cuts a clip into 7.68 s windows (a shorter clip is zero-padded to one window; a longer one gets
windows spread evenly from its start to its end, at most 1 s apart) and maps the mean of the window scores to
1..5. With `model.onnx` it gives the torch model's scores to 1e-4 MOS.

Only 16 kHz input. Resample other rates first, e.g. `scipy.signal.resample_poly(x, 1, 3)` for 48 kHz
(`pip install scipy`): scores then differ slightly from the torch package's, which resamples with torchaudio's
windowed-sinc filter (by up to 0.0085 MOS on the bundled 48 kHz clips). soxr's steeper filter moved the same
clips by up to 0.19 MOS: the model is sensitive to what the resampler leaves near 8 kHz.
"""

import sys
from dataclasses import dataclass, field

import numpy as np
import onnxruntime
import soundfile

SAMPLING_RATE = 16000  # Hz, the only rate the network takes
WINDOW_LENGTH = 122880  # samples: 7.68 s
MAX_WINDOW_HOP = 16000  # samples: windows of a long clip are at most 1 s apart
MOS_MIN, MOS_MAX = 1.0, 5.0


def plan_windows(num_samples: int, window_length: int = WINDOW_LENGTH, max_hop: int = MAX_WINDOW_HOP) -> list[int]:
    """Start samples of a clip's windows: one for a short clip, else spread evenly from start to end, <= max_hop apart."""
    overlength = max(num_samples - window_length, 0)
    num_windows = int(np.ceil(overlength / max_hop)) + 1
    return [int(c * overlength) for c in np.linspace(0, 1, num_windows)]  # as the torch model (float64, truncated)


def cut_windows(waveform: np.ndarray, starts: list[int]) -> np.ndarray:
    """(samples,) -> (len(starts), WINDOW_LENGTH) float32 windows, zero-padded past the clip's end."""
    windows = np.zeros((len(starts), WINDOW_LENGTH), dtype=np.float32)
    for row, start in enumerate(starts):
        part = waveform[start : start + WINDOW_LENGTH]
        windows[row, : len(part)] = part
    return windows


@dataclass
class OnnxScore:
    """A clip's MOS (1..5), and each window's score and start time in seconds."""

    mos: float
    window_scores: list[float] = field(default_factory=list)
    window_start_times: list[float] = field(default_factory=list)


class DistillMOSOnnx:
    """
    Scores 16 kHz mono speech with the ONNX per-window network.

    Args:
        path: `model.onnx` (float32, the torch scores to 1e-4 MOS) or `model_fp16.onnx` (float16, for GPUs).
        providers: onnxruntime execution providers (default: what this onnxruntime has, CUDA first).
        windows_per_call: windows per network call (bounds memory on long clips).
    """

    def __init__(self, path: str = "model.onnx", providers: list[str] | None = None, windows_per_call: int = 16):
        self.session = onnxruntime.InferenceSession(str(path), providers=providers or onnxruntime.get_available_providers())
        self.windows_per_call = windows_per_call

    def score(self, waveform, name: str = "the clip") -> OnnxScore:
        """Scores one 16 kHz mono clip, (samples,) float."""
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1 or waveform.size == 0:
            raise ValueError(f"{name}: expected a non-empty mono clip of shape (samples,), got shape {waveform.shape}.")
        if not np.isfinite(waveform).all():
            raise ValueError(f"{name} contains NaN or infinite samples; the score would be meaningless.")
        starts = plan_windows(len(waveform))
        scores = np.concatenate([
            self.session.run(["scores"], {"windows": cut_windows(waveform, starts[i : i + self.windows_per_call])})[0]
            for i in range(0, len(starts), self.windows_per_call)
        ]).astype(np.float32)
        scale = MOS_MAX - MOS_MIN
        # as the torch model: the mean is taken over the sigmoid outputs, then mapped to 1..5
        return OnnxScore(
            mos=float(MOS_MIN + scale * scores.mean(dtype=np.float32)),
            window_scores=(MOS_MIN + scale * scores).tolist(),
            window_start_times=[start / SAMPLING_RATE for start in starts],
        )

    def score_file(self, path: str) -> OnnxScore:
        """Scores a 16 kHz audio file (its first channel, as the `distill-mos` command line tool)."""
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        if rate != SAMPLING_RATE:
            raise ValueError(
                f"{path} is at {rate} Hz; this module takes 16 kHz audio only: resample it first, e.g. with "
                "scipy.signal.resample_poly (scores then differ slightly from the torch package's resampler)."
            )
        return self.score(audio[:, 0], name=str(path))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    scorer = DistillMOSOnnx(str(__import__("pathlib").Path(__file__).with_name("model.onnx")))
    status = 0
    for path in argv:
        try:
            print(f"{path}\t{scorer.score_file(path).mos:.4f}")
        except (ValueError, OSError, RuntimeError) as error:  # soundfile's LibsndfileError is a RuntimeError
            print(f"{path}\terror: {error}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
