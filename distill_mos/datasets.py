"""
Scoring Hugging Face `datasets` audio columns with `Dataset.map(batched=True)` / `IterableDataset.map`.

Corpus scale: the output columns have declared types (so a batch of bad rows, wherever it falls, cannot make a
column "null"), streaming datasets work the same way, and with `num_proc=N` every worker process loads its own
model lazily, with `cpu_count // N` torch threads or, with GPUs, `cuda:(rank % device_count)`.
"""

import copy
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .audio import decode_bytes, load_audio, select_channel
from .checks import require_checks
from .columns import CHECK_COLUMNS


def example_waveform(audio, channel: str | int = "first") -> tuple[np.ndarray, int]:
    """
    One `Audio` value -> (mono waveform, sampling rate). Accepts undecoded `{"path", "bytes"}` values (decoded here
    exactly as the command line tool decodes files), datasets 5's torchcodec `AudioDecoder` (all channels decoded,
    then `channel` picked) and `{"array", "sampling_rate"}` dicts (a 2-D array is read as (channels, samples)).
    """
    if audio is None:
        raise ValueError("the row has no audio (its audio value is None)")
    if hasattr(audio, "get_all_samples"):
        samples = audio.get_all_samples()
        data, sampling_rate = samples.data.numpy(), int(samples.sample_rate)
    elif not isinstance(audio, dict):
        raise ValueError(
            f"the audio value is a {type(audio).__name__}; expected a dict with 'array' and 'sampling_rate', or "
            "'path' / 'bytes' (an Audio column), or a decoder"
        )
    elif "array" in audio:
        if audio.get("sampling_rate") is None:
            raise ValueError(
                "the audio value has an 'array' but no 'sampling_rate' (a streamed dict must carry the rate its "
                "samples were recorded at)"
            )
        if audio["array"] is None:
            raise ValueError("the row has no audio (its 'array' is None)")
        data, sampling_rate = np.asarray(audio["array"]), audio["sampling_rate"]
    elif audio.get("bytes"):
        decoded = decode_bytes(audio["bytes"], name=audio.get("path") or "audio bytes", channel=channel)
        return decoded.waveform, decoded.sampling_rate
    elif audio.get("path"):
        decoded = load_audio(audio["path"], channel)
        return decoded.waveform, decoded.sampling_rate
    else:
        raise ValueError("the audio value has neither samples, bytes nor a path")
    if data.ndim == 2 and not hasattr(audio, "get_all_samples") and data.shape[0] > data.shape[1]:
        # more channels than samples: (samples, channels) as soundfile.read returns, not a (channels, samples) array
        raise ValueError(
            f"the audio array has shape {data.shape}, which looks like (samples, channels) as soundfile.read returns; "
            "store (channels, samples) or pick one channel (x[:, 0]) or average them (x.mean(axis=1))."
        )
    if data.ndim == 2:
        data = select_channel(data, channel)
    return data, sampling_rate


def _check_workers_can_reload(scorer, settings: dict) -> None:
    """
    Raises a ValueError when `num_proc` workers, which each load their own model from `settings["location"]`, would
    not score with exactly `scorer`'s model and settings (an in-memory or fine-tuned model, a custom window scorer,
    float16 autocast): better no result than every row silently scored by another model.
    """
    from modeling_distillmos import DistillMOSModel

    from .onnx_backend import OnnxWindowScorer, model_fingerprint

    save_hint = "save it with model.save_pretrained(folder) and pass DistillMOSScorer.from_pretrained(folder), or drop num_proc"
    if scorer.half:
        raise ValueError("num_proc workers cannot reproduce half=True (float16 autocast); use dtype='float16' instead.")
    if scorer.window_scorer is not None and not isinstance(scorer.window_scorer, OnnxWindowScorer):
        raise ValueError("num_proc workers cannot reproduce a custom window_scorer; drop num_proc to use it.")
    if not settings["location"]:
        raise ValueError(f"this scorer's model was not loaded from a folder or Hub id, so workers cannot load it: {save_hint}.")
    reloaded = DistillMOSModel.from_pretrained(settings["location"], dtype=scorer.model.dtype)
    if model_fingerprint(reloaded) != settings["weights"]:
        raise ValueError(
            f"this scorer's model differs from the weights at {settings['location']} (fine-tuned or changed in memory), "
            f"which num_proc workers would load: {save_hint}."
        )


def _scorer_settings(scorer) -> dict:
    """
    What a worker process needs to load the same scorer itself (a model cannot cross a fork onto a GPU). `weights`
    (a hash of the weights and config) also makes the map's cache fingerprint tell two models apart.
    """
    from .onnx_backend import model_fingerprint

    hop = scorer.max_window_hop
    return {
        "weights": model_fingerprint(scorer.model),
        "location": getattr(scorer.model, "name_or_path", None) or None,
        "batch_size": scorer.batch_size,
        "window_hop": None if hop is None else hop / scorer.model.config.sampling_rate,
        "dtype": str(scorer.model.dtype).removeprefix("torch."),
        "backend": "onnx" if scorer.window_scorer is not None else "torch",
        "device": scorer.device.type,
    }


class _MOSMapper:
    """
    The function `add_mos_column` maps: `(batch, rank) -> new columns`. It is pickled into `num_proc` worker
    processes without its model; each worker loads its own on first use.

    In a worker, all torch work runs on one dedicated thread: a process forked after the parent ran torch on
    several OpenMP threads hangs in its first parallel region on the inherited (dead) thread team, but a thread
    born after the fork starts a fresh team. So workers use `cpu_count // num_proc` threads, whatever ran before.
    """

    def __init__(
        self, scorer, settings: dict, audio_column: str, column: str, channel, windows: bool, num_proc: int,
        num_threads: int | None = None, interval: bool = False,
    ):
        self.interval = interval
        self.scorer, self.settings = scorer, settings
        self.audio_column, self.column, self.channel, self.windows = audio_column, column, channel, windows
        self.num_proc, self.num_threads = num_proc, num_threads
        self.parent_pid = os.getpid()
        self._thread = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["scorer"], state["_thread"] = None, None  # each worker loads its own model
        return state

    def _load(self, rank: int | None):
        import torch

        from .engine import cpu_count
        from .scorer import DistillMOSScorer

        settings = dict(self.settings)
        settings.pop("weights", None)
        device = settings.pop("device", "auto")
        if device in ("auto", "cuda") and torch.cuda.is_available():
            # the pattern of Hugging Face's dataset-tagging scripts: spread ranks over the GPUs
            device = f"cuda:{(rank or 0) % torch.cuda.device_count()}"
        elif device == "auto":
            device = "cpu"
        torch.set_num_threads(self.num_threads or max(1, cpu_count() // max(1, self.num_proc)))
        return DistillMOSScorer.from_pretrained(settings.pop("location"), device=device, **settings)

    def __call__(self, batch: dict, rank: int | None = None) -> dict:
        if os.getpid() == self.parent_pid:  # in-process map: the caller's scorer and threads, as they are
            if self.scorer is None:
                self.scorer = self._load(rank)
            return self._score(batch)
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distill-mos-worker")
            self.scorer = self._thread.submit(self._load, rank).result()
        return self._thread.submit(self._score, batch).result()

    def _score(self, batch: dict) -> dict:
        from .results import result_columns
        from .scorer import Item

        items = [Item.audio(audio) for audio in batch[self.audio_column]]
        results = list(self.scorer.score_items(items, self.channel))
        checks = self.scorer.checks
        out = result_columns(results, self.column, windows=self.windows, warnings=checks, interval=self.interval,
                             checks=checks)
        out[f"{self.column}_provenance"] = [self.scorer.provenance.summary()] * len(results)
        return out


def output_features(column: str = "mos", windows: bool = False, checks: bool = False, interval: bool = False) -> dict:
    """The declared types of the columns `add_mos_column` adds (float32 MOS, string error, float32 lists)."""
    from datasets import List, Value

    features = {column: Value("float32"), f"{column}_error": Value("string")}
    if checks:  # their warnings
        features[f"{column}_warning"] = Value("string")
    if windows:
        features[f"{column}_window_scores"] = List(Value("float32"))
        features[f"{column}_window_start_times"] = List(Value("float32"))
    if interval:
        features.update({f"{column}_low": Value("float32"), f"{column}_high": Value("float32")})
    if checks:
        features.update({name: Value("float32") for name in CHECK_COLUMNS})
    features[f"{column}_provenance"] = Value("string")
    return features


def add_mos_column(
    dataset,
    scorer=None,
    audio_column: str = "audio",
    column: str = "mos",
    channel: str | int = "first",
    windows: bool = False,
    batch_size: int = 16,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    num_threads: int | None = None,
    checks: bool = False,
    **map_kwargs,
):
    """
    Adds a `column` of predicted MOS (float32, None where the audio could not be scored) and `<column>_error` (the
    reason, else None) to a `datasets.Dataset` or `datasets.IterableDataset` (streaming) with an `Audio` column at
    any sampling rate. With `windows=True` it also adds `<column>_window_scores` and `<column>_window_start_times`
    (seconds). A bad row (missing, corrupt, empty, NaN audio) anywhere, even every row, gives None and its reason;
    the others are scored. `<column>_provenance` names what scored each row (`Provenance.summary()`: version, weights
    SHA-256, precision, backend, device, hop): a column rather than `info.description`, because it survives
    `concatenate_datasets`, `select`, `to_pandas` and `to_csv`, and shows rows scored by different runs as such. A
    calibrated model adds `<column>_low` / `<column>_high`; `checks=True` adds the input checks' columns
    (`speech_share`, `loudness_lufs`, `clipped_share`, `bandwidth_hz`) and their warnings in `<column>_warning`.

        ds = load_dataset("audiofolder", data_dir="clips")["train"]
        ds = add_mos_column(ds)                                   # ds["mos"]
        ds = add_mos_column(ds, num_proc=4)                       # 4 processes, each with its own model
        stream = add_mos_column(load_dataset(hub_id, split="train", streaming=True))  # scored as you iterate

    Args:
        scorer: a `DistillMOSScorer` (default: one loaded from `model` on `device` in `dtype`). With `num_proc`,
            each worker loads its own copy with the same settings.
        batch_size: rows per `map` batch (and per model call).
        model, device, dtype: how to load the scorer when none is given ("auto" device: a GPU if there is one; with
            `num_proc`, worker `rank` gets `cuda:(rank % device_count)`).
        num_threads: torch CPU threads per worker with `num_proc` (default: `cpu_count // num_proc`).
        map_kwargs: passed to `Dataset.map` (`num_proc`, `remove_columns`, `desc`, ...) or `IterableDataset.map`
            (which takes no `num_proc` or `desc`).
    """
    import datasets

    streaming = isinstance(dataset, datasets.IterableDataset)
    names = dataset.column_names
    if names is not None and audio_column not in names:
        raise ValueError(f"the dataset has no column {audio_column!r}; its columns are {names}.")
    num_proc = map_kwargs.pop("num_proc", None)
    map_kwargs.pop("with_rank", None)  # the rank is always used (to pick a GPU)
    if streaming:
        if num_proc not in (None, 1):
            raise ValueError(
                "num_proc is not supported for a streaming IterableDataset: split it into shards "
                "(IterableDataset.shard) and score each in its own process, or use distill_mos.ray."
            )
        map_kwargs.pop("desc", None)
    else:
        map_kwargs.setdefault("desc", "Distill-MOS")
    parallel = num_proc is not None and num_proc > 1

    # How workers load their own model; also what the map's cache fingerprint sees instead of the weights.
    settings = {"location": model, "device": device, "dtype": dtype} if scorer is None else _scorer_settings(scorer)
    settings["checks"] = checks
    if scorer is None and not parallel:
        from .scorer import DistillMOSScorer

        scorer = DistillMOSScorer.from_pretrained(model, device=device, dtype=dtype, checks=checks)
    elif scorer is not None and parallel:
        _check_workers_can_reload(scorer, settings)
    if scorer is not None and scorer.checks != checks:  # the caller's scorer, as it is, but for the checks
        scorer = copy.copy(scorer)
        scorer.checks = checks
    if checks:
        require_checks()
    if scorer is not None:
        interval = scorer.interval is not None
    else:  # num_proc workers load the model: read its config here
        from .provenance import calibration_at
        from .scorer import default_model_location

        interval = calibration_at(model or default_model_location()) is not None

    features = dataset.features
    feature = features[audio_column] if features is not None else None
    decodes_itself = getattr(feature, "decode", False) and type(feature).__name__ == "Audio"
    if decodes_itself:
        # Decode inside the map, row by row, so that one unreadable file cannot stop the whole map.
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    if dataset.features is not None:
        removed = map_kwargs.get("remove_columns") or []
        removed = [removed] if isinstance(removed, str) else list(removed)
        declared = {name: f for name, f in dataset.features.items() if name not in removed}
        declared.update(output_features(column, windows, checks, interval))
        map_kwargs["features"] = datasets.Features(declared)

    mapper = _MOSMapper(scorer if not parallel else None, settings, audio_column, column, channel, windows,
                        num_proc or 1, num_threads, interval=interval)
    if streaming:
        scored = dataset.map(mapper, batched=True, batch_size=batch_size, **map_kwargs)
    else:
        scored = dataset.map(
            mapper, batched=True, batch_size=batch_size, with_rank=True, num_proc=num_proc, **map_kwargs
        )
    if decodes_itself and audio_column in (scored.column_names or []):  # unless map_kwargs removed it
        scored = scored.cast_column(audio_column, feature)
    return scored
