"""`DistillMOSScorer`: the one scoring path (arrays, files, encoded bytes, datasets values -> typed results)."""

import itertools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from feature_extraction_distillmos import SILENT_MESSAGE as SILENT
from feature_extraction_distillmos import DistillMOSFeatureExtractor
from modeling_distillmos import DistillMOSModel

from .audio import (
    SILENT_WARNING,
    AudioFileError,
    AudioTooLongError,
    DecodedAudio,
    ResampledAudio,
    decode_bytes,
    decode_bytes_resampled,
    join_warnings,
    load_audio,
    load_resampled,
)
from .calibration import MOSInterval
from .checks import check_audio, require_checks
from .provenance import DEFAULT_HUB_ID, Provenance, check_model_location, find_model_location, of_scorer  # noqa: F401
from .results import FileScore, Item, Score, ScoringFailure  # noqa: F401 - the result types, re-exported
from .engine import DTYPE_NAMES, Execution, cpu_has_native_bf16, ordered_map, resolve_device, resolve_dtype  # noqa: F401

# Clips of a batch are padded to the longest; cap what padding may cost (samples x clips, 64 MB of float32).
MAX_BATCH_SAMPLES = 16_000_000


def default_model_location() -> str:
    """$DISTILL_MOS_MODEL, else this checkout (or the copy `pip install` put in <prefix>/share), else the Hub id."""
    return find_model_location(Path(__file__).resolve().parents[1])


@dataclass
class _Prepared:
    """An input decoded, validated and resampled to 16 kHz, ready to batch (or its error)."""

    result: FileScore
    waveform: np.ndarray | None = None


class DistillMOSScorer:
    """
    Scores speech with Distill-MOS: the one scoring path of the CLI, the API, `add_mos_column`, Ray and the Space.

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
        window_scorer: runs the network on windows instead of the model (e.g. an ONNX Runtime session, see
            `distill_mos.onnx_backend`); windowing and averaging stay in the model.
        half: score in float16 autocast (CUDA only); kept for compatibility, `dtype="float16"` in `from_pretrained`
            runs the whole network in float16 instead.
        execution: how the model runs (`distill_mos.engine.Execution`); `window_scorer` and `half` fill one in.
        checks: run the input checks (`distill_mos.checks`: speech share, loudness, clipping, bandwidth) on each clip
            at its original rate; results get `checks` and their warnings (needs `distill-mos-hf[checks]`).

    A model whose config carries a calibrated `mos_interval` (`distill-mos calibrate`) gives every score its
    `mos_low` and `mos_high`.

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
        execution: Execution | None = None,
        checks: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        if window_hop is not None and window_hop <= 0:
            raise ValueError(f"window_hop must be a positive number of seconds, got {window_hop}.")
        self.execution = execution or Execution(half=half, window_scorer=window_scorer)
        self.execution.prepare(model)
        self.model = model
        self.feature_extractor = feature_extractor
        self.batch_size = batch_size
        self.max_window_hop = None if window_hop is None else max(1, round(window_hop * model.config.sampling_rate))
        if checks:
            require_checks()  # a missing package is a load-time error, not one error per file
        self.checks = checks
        self.interval = MOSInterval.from_config(model.config)

    @classmethod
    def from_pretrained(
        cls,
        location: str | os.PathLike | None = None,
        device: str | torch.device | None = "auto",
        backend: str = "torch",
        onnx_path: str | os.PathLike | None = None,
        dtype: str | torch.dtype | None = "float32",
        decode_workers: int | None = None,
        **kwargs,
    ) -> "DistillMOSScorer":
        """
        Loads the model and feature extractor from a folder or Hub id (default: `default_model_location()`).

        `backend="onnx"` scores windows with ONNX Runtime (needs `onnx` and `onnxruntime`), exporting the network to
        `onnx_path` (default: `~/.cache/distill-mos/`) on first use; windowing and averaging stay in the model.

        `dtype`: "float32" (default, exact), "bfloat16", "float16" or "auto" (bfloat16 on CPUs with native bfloat16,
        float16 on CUDA GPUs with tensor cores, else float32). The spectrogram is always computed in float32.
        `decode_workers`: threads decoding files ahead of the model (default: 1 on CPU, more on a GPU).
        """
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}.")
        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
        if backend == "onnx" and dtype != torch.float32:
            raise ValueError(f"the ONNX backend runs in float32; use dtype='float32' with it, or the torch backend for {dtype}.")
        location = check_model_location(location or default_model_location())  # a missing folder: "no such folder"
        model = DistillMOSModel.from_pretrained(location, dtype=dtype).to(device)
        window_scorer = kwargs.pop("window_scorer", None)
        if backend == "onnx":
            from .onnx_backend import load_onnx_window_scorer  # onnxruntime stays an optional dependency

            window_scorer = load_onnx_window_scorer(model, onnx_path)
        execution = Execution(half=kwargs.pop("half", False), window_scorer=window_scorer, decode_workers=decode_workers)
        return cls(model, DistillMOSFeatureExtractor.from_pretrained(location), execution=execution, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        """Precision the network runs in (float32 is exact)."""
        return torch.float16 if self.half else self.model.dtype

    @property
    def provenance(self) -> Provenance:
        """What produces this scorer's scores (model and weights' SHA-256, precision, backend, hop), computed once."""
        if getattr(self, "_provenance", None) is None:
            self._provenance = of_scorer(self)
        return self._provenance

    @property
    def half(self) -> bool:
        return self.execution.half

    @property
    def window_scorer(self):
        return self.execution.window_scorer

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    # --- arrays -------------------------------------------------------------------------------------------------

    def prepare(self, waveform, sampling_rate: int, name: str = "the clip") -> np.ndarray:
        """Validates one clip and resamples it to 16 kHz: (samples,) float32. Raises ValueError on bad input."""
        return self.feature_extractor.prepare_clip(waveform, sampling_rate, name)

    def score_prepared(self, waveforms: Sequence[np.ndarray]) -> list[Score]:
        """
        Scores 16 kHz clips (as returned by `prepare`), `batch_size` at a time, in bounded padded batches of similar
        lengths. Raises when the network fails; `score_clips` isolates failing clips instead.
        """
        scores: list[Score | None] = [None] * len(waveforms)
        options = self.execution.forward_options(self.model)
        for batch in _length_batches([len(w) for w in waveforms], self.batch_size, MAX_BATCH_SAMPLES):
            if len(batch) == 1:  # nothing to pad: use the samples as they are (no copy, no mask; matters for hours)
                inputs = {"input_values": torch.from_numpy(waveforms[batch[0]])[None].to(self.device)}
            else:
                with warnings.catch_warnings():  # silence was already reported, by clip or file name
                    warnings.simplefilter("ignore", UserWarning)
                    inputs = self.feature_extractor(
                        [waveforms[i] for i in batch], sampling_rate=self.sampling_rate, return_tensors="pt"
                    ).to(self.device)
            with self.execution.context(self.device):
                output = self.model(**inputs, max_window_hop=self.max_window_hop, **options)
            for row, index in enumerate(batch):
                mask = output.window_mask[row]
                mos = float(output.mos[row])
                low, high = self._bounds(mos)
                scores[index] = Score(
                    mos=mos,
                    window_scores=output.window_scores[row][mask].tolist(),
                    window_start_times=output.window_start_times[row][mask].tolist(),
                    mos_low=low,
                    mos_high=high,
                )
        return scores

    def _bounds(self, mos: float) -> tuple[float | None, float | None]:
        """The calibrated interval around one score; (None, None) for a model without one."""
        if self.interval is None:
            return None, None
        return self.interval.bounds(mos, self.model.config.mos_min, self.model.config.mos_max)

    def score_clips(self, waveforms: Sequence[np.ndarray]) -> list[Score | ScoringFailure]:
        """
        Like `score_prepared`, but never raises: a clip that cannot be scored gets a `ScoringFailure` in its place.
        When a batch fails (e.g. out of memory), its clips are scored one by one, so only the culprit loses its score.
        """
        try:
            scores = self.score_prepared(waveforms)
        except Exception as error:  # noqa: BLE001 - isolate the failing clip below
            if len(waveforms) == 1:
                return [ScoringFailure(f"scoring failed: {type(error).__name__}: {error}", type(error).__name__)]
            scores = [self.score_clips([waveform])[0] for waveform in waveforms]
        return [
            ScoringFailure("scoring gave a non-finite score") if isinstance(s, Score) and not np.isfinite(s.mos) else s
            for s in scores
        ]

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
        scores = self.score_prepared(prepared)
        if self.checks:  # on each clip at its own rate (the bandwidth of the audio, not of the resampling)
            for score, waveform, rate, clip in zip(scores, waveforms, sampling_rates, prepared):
                score.checks = check_audio(waveform, rate, clip)
        return scores

    # --- any input: the one path of every interface --------------------------------------------------------------

    def prepare_item(self, item: Item, channel: str | int = "first", max_seconds: float | None = None) -> _Prepared:
        """
        Decodes and validates one input; never raises for bad input, records the reason instead. `max_seconds`
        refuses longer audio of files, encoded bytes and undecoded datasets values during decoding (see
        `load_audio`); such a result has `too_long` set.
        """
        result = FileScore(path=item.name)
        try:
            item = _undecoded(item)  # after the result took the item's name
            if item.kind == "failed":
                result.error = item.value
                return _Prepared(result)
            if item.kind in ("file", "bytes") and self.checks:
                # the checks read the audio at its own rate (its bandwidth, not the resampler's): decoded whole
                decoded = (load_audio(item.value, channel, max_seconds) if item.kind == "file" else
                           decode_bytes(item.value, name=item.name or "audio bytes", channel=channel, max_seconds=max_seconds))
                return self._from_decoded(result, decoded)
            if item.kind == "file":
                # decoded and resampled block by block: memory bounded whatever the length (long audio spills to disk)
                return self._from_resampled(result, load_resampled(item.value, channel, max_seconds, self.sampling_rate))
            if item.kind == "bytes":
                name = item.name or "audio bytes"
                resampled = decode_bytes_resampled(item.value, name, channel, max_seconds, self.sampling_rate)
                return self._from_resampled(result, resampled)
            if item.kind == "array":
                return self._from_samples(result, item.value, item.sampling_rate, channels=1)
            if item.kind == "audio":
                from .datasets import example_waveform

                waveform, sampling_rate = example_waveform(item.value, channel)
                return self._from_samples(result, waveform, sampling_rate, channels=None)
            raise ValueError(f"unknown input kind {item.kind!r}")
        except AudioFileError as error:  # the result names its input already: keep the reason
            result.error, result.too_long = error.reason, isinstance(error, AudioTooLongError)
        except ValueError as error:
            result.error = str(error)
        except Exception as error:  # noqa: BLE001 - whatever a decoder or resampler raises stays this input's problem
            result.error = f"could not be read: {type(error).__name__}: {error}"
        return _Prepared(result)

    def _from_decoded(self, result: FileScore, decoded: DecodedAudio) -> _Prepared:
        result.duration, result.sampling_rate, result.channels = decoded.duration, decoded.sampling_rate, decoded.channels
        waveform = self.prepare(decoded.waveform, decoded.sampling_rate, name="audio")
        # decoded.warning: very short, or far shorter than the header says (wording in distill_mos.audio)
        notes = ([SILENT_WARNING] if not waveform.any() else []) + ([decoded.warning] if decoded.warning else [])
        result.warning = join_warnings(*notes, *self._check(result, decoded.waveform, decoded.sampling_rate, waveform))
        return _Prepared(result, waveform)

    def _from_resampled(self, result: FileScore, resampled: ResampledAudio) -> _Prepared:
        result.duration, result.sampling_rate, result.channels = (
            resampled.duration, resampled.sampling_rate, resampled.channels
        )
        result.warning = resampled.warning  # silent, very short, truncated, ... (wording in distill_mos.audio)
        return _Prepared(result, resampled.waveform)

    def _from_samples(self, result: FileScore, samples, sampling_rate, channels: int | None) -> _Prepared:
        waveform = self.prepare(samples, sampling_rate, name="audio")
        result.sampling_rate, result.channels = int(sampling_rate), channels
        result.duration = len(samples) / sampling_rate
        notes = [] if waveform.any() else [SILENT_WARNING]
        result.warning = join_warnings(*notes, *self._check(result, samples, sampling_rate, waveform))
        return _Prepared(result, waveform)

    def _check(self, result: FileScore, samples, sampling_rate: int, waveform: np.ndarray) -> list[str]:
        """With `checks`: the input checks on the ORIGINAL-rate `samples` into `result.checks`; their warnings."""
        if not self.checks:
            return []
        result.checks = check_audio(samples, sampling_rate, waveform)
        return result.checks.warnings

    def prepare_file(self, path: str | Path, channel: str | int = "first", max_seconds: float | None = None) -> _Prepared:
        """`prepare_item(Item.file(path))`: decodes and validates one file, recording the reason if it is bad."""
        return self.prepare_item(Item.file(path), channel, max_seconds)

    def score_items(
        self, items: Iterable[Item], channel: str | int = "first", max_seconds: float | None = None
    ) -> Iterator[FileScore]:
        """
        Scores inputs of any kind, in input order, `batch_size` at a time, while decoding threads (see
        `Execution.decode_workers`) prepare the next ones, at most two batches ahead. A bad input yields a
        `FileScore` with `error` set; the others are still scored. Call under any grad mode: scoring runs in
        inference mode.
        """
        workers = self.execution.default_decode_workers(self.device)
        prepared = ordered_map(
            lambda item: self.prepare_item(item, channel, max_seconds), items, workers,
            max_pending=max(2 * self.batch_size, workers),
        )
        while batch := list(itertools.islice(prepared, self.batch_size)):
            yield from self._score_batch(batch)

    def _score_batch(self, batch: list[_Prepared]) -> list[FileScore]:
        good = [p for p in batch if p.waveform is not None]
        for p, outcome in zip(good, self.score_clips([p.waveform for p in good]) if good else []):
            if isinstance(outcome, ScoringFailure):
                p.result.error, p.result.error_type = outcome.reason, outcome.error_type
            else:
                p.result.mos, p.result.mos_low, p.result.mos_high = outcome.mos, outcome.mos_low, outcome.mos_high
                p.result.window_scores, p.result.window_start_times = outcome.window_scores, outcome.window_start_times
        return [p.result for p in batch]

    def score_files(
        self, paths: Iterable[str | Path], channel: str | int = "first", max_seconds: float | None = None
    ) -> Iterator[FileScore]:
        """`score_items` of files: one `FileScore` per path, in order; a bad file gets its `error`."""
        return self.score_items((Item.file(path) for path in paths), channel, max_seconds)


def _undecoded(item: Item) -> Item:
    """
    An undecoded 🤗 datasets Audio value (`{"bytes", "path"}` or `{"path"}`, as `Audio(decode=False)` gives) as the
    encoded bytes (named by its path, whose suffix picks the decoder) or the file it holds, so that it takes their
    block decoder: memory bounded whatever the length, where decoding it whole at its own rate would not be. Any
    other item as it is (arrays, decoders and values without bytes or path go to `example_waveform`).
    """
    value = item.value
    if item.kind != "audio" or not isinstance(value, dict) or "array" in value:
        return item
    if value.get("bytes"):
        return Item.encoded(value["bytes"], value.get("path") or None)
    if value.get("path"):
        return Item.file(value["path"])
    return item


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
