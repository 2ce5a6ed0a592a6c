"""`DistillMOSScorer`: score arrays, files and folders without wiring the feature extractor and model by hand."""

import contextlib
import itertools
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from feature_extraction_distillmos import SILENT_MESSAGE as SILENT
from feature_extraction_distillmos import DistillMOSFeatureExtractor
from modeling_distillmos import DistillMOSModel

from .audio import AudioFileError, load_resampled

# Where the model will be published on the Hub; used when no local copy is found.
DEFAULT_HUB_ID = "distill-mos/distill-mos-v7"
_MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
# Clips of a batch are padded to the longest; cap what padding may cost (samples x clips, 64 MB of float32).
MAX_BATCH_SAMPLES = 16_000_000


def default_model_location() -> str:
    """$DISTILL_MOS_MODEL, else this checkout (or the copy `pip install` put in <prefix>/share), else the Hub id."""
    if os.environ.get("DISTILL_MOS_MODEL"):
        return os.environ["DISTILL_MOS_MODEL"]
    for folder in (Path(__file__).resolve().parents[1], Path(sys.prefix) / "share" / "distill-mos"):
        # a git checkout without git-lfs holds a ~130-byte pointer instead of the 16 MB weights: not a model
        if all((folder / name).is_file() for name in _MODEL_FILES) and (folder / "model.safetensors").stat().st_size > 1_000_000:
            return str(folder)
    return DEFAULT_HUB_ID


# What `dtype=` accepts besides a torch.dtype; "auto" picks by hardware (see `resolve_dtype`).
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512_BF16 or AMX), as torch reads them from cpuid."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """
    `dtype` ("float32", "bfloat16", "float16", "auto", a torch.dtype, or None for float32) -> the dtype to load the
    model in. "auto": bfloat16 on CPUs with native bfloat16, float16 on CUDA GPUs with tensor cores (compute capability
    7.0 or newer), float32 otherwise. float32 is the exact setting (the original's scores to 1e-4).
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPE_NAMES.values():
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)} or auto, got {dtype}.")
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.float16 if torch.cuda.get_device_capability(device) >= (7, 0) else torch.float32
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)} or auto, got {dtype!r}.")
    return DTYPE_NAMES[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu or auto.")
    return device


@dataclass
class Score:
    """The score of one clip: `mos` (1..5) and, per analysis window, its score and start time in seconds."""

    mos: float
    window_scores: list[float] = field(default_factory=list)
    window_start_times: list[float] = field(default_factory=list)


@dataclass
class FileScore:
    """The outcome for one file: a score, or `error` (then `mos` is None)."""

    path: str
    mos: float | None = None
    duration: float | None = None
    sampling_rate: int | None = None
    channels: int | None = None
    window_scores: list[float] = field(default_factory=list)
    window_start_times: list[float] = field(default_factory=list)
    error: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Prepared:
    """A file decoded, validated and resampled to 16 kHz, ready to batch (or its error)."""

    result: FileScore
    waveform: np.ndarray | None = None


class DistillMOSScorer:
    """
    Scores speech with Distill-MOS.

        scorer = DistillMOSScorer.from_pretrained()              # this checkout, or the Hub
        scorer.score_array(waveform, sampling_rate=48000).mos
        for result in scorer.score_files(["a.wav", "b.mp3"]):
            print(result.path, result.mos or result.error)

    Args:
        model: a loaded [`DistillMOSModel`].
        feature_extractor: its [`DistillMOSFeatureExtractor`].
        batch_size: clips per model call (windows of all clips in a call are scored together).
        window_hop: seconds between window starts on long audio. `None` keeps the model's exact setting (1 s);
            larger values (e.g. 4 or 7.68) are the opt-in fast mode: fewer windows, slightly different scores.
        window_scorer: runs the network on windows instead of `model.score_windows` (e.g. an ONNX Runtime session,
            see `distill_mos.onnx_backend`); windowing and averaging stay in the model.
        half: score in float16 autocast (CUDA only); kept for compatibility, `dtype="float16"` in `from_pretrained`
            runs the whole network in float16 instead.

    The model's dtype (see `from_pretrained(dtype=...)`) sets the precision: float32 (default) is exact; bfloat16 and
    float16 are faster on hardware that has them, with deviations measured by `bench/benchmark.py`.
    """

    def __init__(
        self,
        model: DistillMOSModel,
        feature_extractor: DistillMOSFeatureExtractor,
        batch_size: int = 8,
        window_hop: float | None = None,
        window_scorer: Callable[[torch.Tensor], torch.Tensor] | None = None,
        half: bool = False,
    ):
        if half and model.device.type != "cuda":
            raise ValueError("half precision (half=True, --half) needs the model on a CUDA GPU.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if window_hop is not None and window_hop <= 0:
            raise ValueError(f"window_hop must be a positive number of seconds, got {window_hop}.")
        self.model = model.eval()
        self.feature_extractor = feature_extractor
        self.batch_size = batch_size
        self.max_window_hop = None if window_hop is None else max(1, round(window_hop * model.config.sampling_rate))
        self.window_scorer = window_scorer
        self.half = half

    @classmethod
    def from_pretrained(
        cls,
        location: str | os.PathLike | None = None,
        device: str | torch.device | None = "auto",
        backend: str = "torch",
        onnx_path: str | os.PathLike | None = None,
        dtype: str | torch.dtype | None = "float32",
        **kwargs,
    ) -> "DistillMOSScorer":
        """
        Loads the model and feature extractor from a folder or Hub id (default: `default_model_location()`).

        `backend="onnx"` scores windows with ONNX Runtime (needs `onnx` and `onnxruntime`), exporting the network to
        `onnx_path` (default: `~/.cache/distill-mos/`) on first use; windowing and averaging stay in the model.

        `dtype`: "float32" (default, exact), "bfloat16", "float16" or "auto" (bfloat16 on CPUs with native bfloat16,
        float16 on CUDA GPUs with tensor cores, else float32). The spectrogram is always computed in float32.
        """
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}.")
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        if backend == "onnx" and dtype != torch.float32:
            raise ValueError(f"the ONNX backend runs in float32; use dtype='float32' with it, or the torch backend for {dtype}.")
        location = str(location or default_model_location())
        model = DistillMOSModel.from_pretrained(location, dtype=dtype).to(device)
        if backend == "onnx":
            from .onnx_backend import load_onnx_window_scorer  # onnxruntime stays an optional dependency

            kwargs["window_scorer"] = load_onnx_window_scorer(model, onnx_path)
        return cls(model, DistillMOSFeatureExtractor.from_pretrained(location), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """Precision the network runs in (float32 is exact)."""
        return torch.float16 if self.half else self.model.dtype

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    # --- arrays -------------------------------------------------------------------------------------------------

    def prepare(self, waveform, sampling_rate: int, name: str = "the clip") -> np.ndarray:
        """Validates one clip and resamples it to 16 kHz: (samples,) float32. Raises ValueError on bad input."""
        return self.feature_extractor.prepare_clip(waveform, sampling_rate, name)

    def score_prepared(self, waveforms: Sequence[np.ndarray]) -> list[Score]:
        """Scores 16 kHz clips (as returned by `prepare`), `batch_size` at a time, in bounded padded batches."""
        scores: list[Score | None] = [None] * len(waveforms)
        for batch in _length_batches([len(w) for w in waveforms], self.batch_size, MAX_BATCH_SAMPLES):
            if len(batch) == 1:  # nothing to pad: use the samples as they are (no copy, no mask; matters for hours)
                inputs = {"input_values": torch.from_numpy(waveforms[batch[0]])[None].to(self.device)}
            else:
                with warnings.catch_warnings():  # silence was already reported, by clip or file name
                    warnings.simplefilter("ignore", UserWarning)
                    inputs = self.feature_extractor(
                        [waveforms[i] for i in batch], sampling_rate=self.sampling_rate, return_tensors="pt"
                    ).to(self.device)
            # half: float16 autocast on CUDA (convolutions and matmuls in half, norms and softmax in float32)
            half = torch.autocast("cuda", dtype=torch.float16) if self.half else contextlib.nullcontext()
            with torch.inference_mode(), half:
                output = self.model(**inputs, max_window_hop=self.max_window_hop, window_scorer=self.window_scorer)
            for row, index in enumerate(batch):
                mask = output.window_mask[row]
                scores[index] = Score(
                    mos=float(output.mos[row]),
                    window_scores=output.window_scores[row][mask].tolist(),
                    window_start_times=output.window_start_times[row][mask].tolist(),
                )
        return scores

    def score_array(self, waveform, sampling_rate: int) -> Score:
        """Scores one mono clip (numpy array, tensor or list; float or integer PCM) at any sampling rate."""
        return self.score_arrays([waveform], sampling_rate)[0]

    def score_arrays(self, waveforms: Sequence, sampling_rates: int | Sequence[int]) -> list[Score]:
        """Scores several clips; `sampling_rates` is one rate (an int, in Hz) for all, or a sequence of one per clip."""
        if isinstance(sampling_rates, (int, float, np.integer, np.floating)) and not isinstance(sampling_rates, bool):
            sampling_rates = [sampling_rates] * len(waveforms)
        if isinstance(sampling_rates, (str, bytes)) or not isinstance(sampling_rates, Sequence | np.ndarray):
            raise ValueError(
                "sampling_rates must be one int (Hz) for all clips or a list of ints, one per clip; got "
                f"{sampling_rates!r} ({type(sampling_rates).__name__})."
            )
        if len(sampling_rates) != len(waveforms):
            raise ValueError(f"got {len(waveforms)} clips but {len(sampling_rates)} sampling rates.")
        prepared = []
        for index, (waveform, sampling_rate) in enumerate(zip(waveforms, sampling_rates)):
            name = "the clip" if len(waveforms) == 1 else f"clip {index}"
            prepared.append(self.prepare(waveform, sampling_rate, name))
            if not prepared[-1].any():
                warnings.warn(f"{name} {SILENT}", UserWarning, stacklevel=2)
        return self.score_prepared(prepared)

    # --- files --------------------------------------------------------------------------------------------------

    def prepare_file(self, path: str | Path, channel: str | int = "first", max_seconds: float | None = None) -> _Prepared:
        """
        Decodes and validates one file; never raises for a bad file, records the reason instead. `max_seconds` refuses
        longer audio during decoding (see `load_audio`).
        """
        result = FileScore(path=str(path))
        try:
            # decoded and resampled block by block: memory bounded whatever the length (long audio spills to disk)
            decoded = load_resampled(path, channel, max_seconds, target_rate=self.sampling_rate)
            result.duration, result.sampling_rate, result.channels = (
                decoded.duration,
                decoded.sampling_rate,
                decoded.channels,
            )
            # silent, very short, far shorter than the header says, ... (wording in distill_mos.audio)
            result.warning = decoded.warning
            return _Prepared(result, decoded.waveform)
        except AudioFileError as error:
            result.error = error.reason
        except ValueError as error:
            result.error = str(error)
        except Exception as error:  # noqa: BLE001 - whatever a decoder or resampler raises stays this file's problem
            result.error = f"could not be read: {type(error).__name__}: {error}"
        return _Prepared(result)

    def score_files(
        self,
        paths: Iterable[str | Path],
        channel: str | int = "first",
        max_seconds: float | None = None,
    ) -> Iterator[FileScore]:
        """
        Scores files in input order, `batch_size` at a time, decoding the next batch in a background thread while the
        model scores the current one. A bad file yields a `FileScore` with `error` set; the others are still scored.
        `max_seconds` refuses longer files while decoding (see `prepare_file`).
        """
        groups = _chunks(iter(paths), self.batch_size)

        def prepare_group(group):
            return [self.prepare_file(path, channel, max_seconds) for path in group]

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="distill-mos-decode") as pool:
            group = next(groups, None)
            pending = pool.submit(prepare_group, group) if group else None
            while pending is not None:
                prepared = pending.result()
                group = next(groups, None)
                pending = pool.submit(prepare_group, group) if group else None
                yield from self._score_prepared_files(prepared)

    def score_prepared_each(self, waveforms: Sequence[np.ndarray]) -> list[Score | str]:
        """
        Like `score_prepared`, but never raises: a clip that cannot be scored gets the reason (a str) in its place.
        When a batch fails (e.g. out of memory), its clips are scored one by one, so only the culprit loses its score.
        """
        try:
            scores = self.score_prepared(waveforms)
        except Exception as error:  # noqa: BLE001 - isolate the failing clip below
            if len(waveforms) == 1:
                return [f"scoring failed: {type(error).__name__}: {error}"]
            scores = [self.score_prepared_each([waveform])[0] for waveform in waveforms]
        return [
            "scoring gave a non-finite score" if isinstance(s, Score) and not np.isfinite(s.mos) else s for s in scores
        ]

    def _score_prepared_files(self, prepared: list[_Prepared]) -> Iterator[FileScore]:
        good = [p for p in prepared if p.waveform is not None]
        for p, score in zip(good, self.score_prepared_each([p.waveform for p in good]) if good else []):
            if isinstance(score, str):
                p.result.error = score
            else:
                p.result.mos, p.result.window_scores, p.result.window_start_times = (
                    score.mos,
                    score.window_scores,
                    score.window_start_times,
                )
        for p in prepared:
            yield p.result


def _chunks(iterator: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _length_batches(lengths: Sequence[int], batch_size: int, max_padded_samples: int) -> list[list[int]]:
    """Groups clip indices, shortest first, so that no batch pads more than `max_padded_samples` in all."""
    batches, current = [], []
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        # sorted ascending, so the newest clip is the longest of the batch
        if current and (len(current) == batch_size or (len(current) + 1) * lengths[index] > max_padded_samples):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
