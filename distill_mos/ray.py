"""
Scoring corpora with [Ray Data](https://docs.ray.io/en/latest/data/data.html): one model per actor, on one machine
or a cluster (`pip install "distill-mos-hf[ray]"`).

    import ray
    from distill_mos.ray import DistillMOSPredictor, actor_pool_options

    ds = ray.data.from_items([{"path": p} for p in paths])
    ds = ds.map_batches(DistillMOSPredictor, **actor_pool_options(num_actors=4))
    ds.filter(lambda row: row["mos"] is not None and row["mos"] >= 3.5).write_parquet("good/")

or, for files or a 🤗 dataset straight to a Parquet or CSV file: `score_with_ray(paths_or_dataset, "scores.parquet")`.
The command line tool's `--ray [ADDRESS]` runs `score_files_with_ray`.

Rows that cannot be scored (missing, corrupt, silent-but-unreadable, ...) get `mos` None and the reason in
`mos_error`; they never fail the job. An actor that dies (a killed process, a lost node) is restarted by Ray and
its batch is retried, so every input still yields exactly one row.
"""

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

# Columns of `score_files_with_ray` rows: the command line tool's (cli imports no torch).
from .cells import printable_path
from .columns import COLUMNS as FILE_COLUMNS
from .columns import CHECK_COLUMNS, INTERVAL_COLUMNS, WINDOW_COLUMNS

# Input columns the predictor understands, in the order it looks for them (see `DistillMOSPredictor`).
INPUT_COLUMNS = ("audio", "bytes", "array", "path", "file")


def init_ray(address: str | None = None, **init_kwargs) -> bool:
    """
    Starts a new local Ray instance (`address=None`) or joins the cluster at `address` ("auto", "HOST:PORT",
    "ray://HOST:PORT"), unless this process is connected already; returns whether it connected now. Quiet: no
    dashboard, warnings only.

    A local run starts its own instance (Ray's `address="local"`): `ray.init(address=None)` would join whatever
    cluster `$RAY_ADDRESS` or `<ray temp dir>/ray_current_cluster` names, and a stale file left by an earlier
    `ray start` made it wait on a dead cluster for minutes. Joining a running cluster is `address="auto"`.
    """
    import logging

    import ray

    if ray.is_initialized():
        return False
    init_kwargs.setdefault("logging_level", "WARNING")
    if address is None:
        init_kwargs.setdefault("include_dashboard", False)
        init_kwargs.setdefault("_node_ip_address", "127.0.0.1")  # one machine: nothing listens beyond loopback
    # Ray sends the driver's command line (read from /proc, not sys.argv) to the cluster as UTF-8: an argument that
    # is not (a file named with bytes \xff\xfe) refuses the connection. Ray has no option for it, so its entry-point
    # name is given as the outputs write such names (\xNN) while it connects.
    from ray._private import utils as ray_utils

    entrypoint = getattr(ray_utils, "get_entrypoint_name", None)
    if entrypoint is not None:
        ray_utils.get_entrypoint_name = lambda: printable_path(entrypoint())
    try:
        ray.init(address="local" if address is None else address, **init_kwargs)
    finally:
        if entrypoint is not None:
            ray_utils.get_entrypoint_name = entrypoint
    from ray.data import DataContext

    DataContext.get_current().print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no "execution finished" lines between our rows
    return True


def _assigned(resource: str) -> float:
    """How much of `resource` Ray gave the current actor (0 outside Ray)."""
    try:
        import ray

        return float(ray.get_runtime_context().get_assigned_resources().get(resource, 0))
    except Exception:  # noqa: BLE001 - not inside a Ray worker
        return 0.0


class DistillMOSPredictor:
    """
    A callable class for `ray.data.Dataset.map_batches(DistillMOSPredictor, batch_format="pyarrow", ...)`: each
    actor loads one model and scores the batches it is given.

    Input rows hold one of (looked for in this order, or named by `audio_column`):
    - `audio`: a 🤗 datasets `Audio` value (`{"bytes", "path"}` or `{"array", "sampling_rate"}`);
    - `bytes`: an encoded audio file (wav, flac, mp3, ...);
    - `array` (1-D float or integer PCM samples) with `sampling_rate` (Hz);
    - `path` or `file`: an audio file on a file system every actor can read.

    Output: the input columns (minus `audio`/`bytes`/`array` unless `keep_audio`) plus `<column>` (float MOS 1..5,
    None when the row could not be scored), `<column>_error` (the reason, else None), `<column>_warning` (silent,
    very short or truncated audio, else None), with `windows=True` `<column>_window_scores` and
    `<column>_window_start_times` (seconds), and with `file_details=True` the command line tool's `duration_s`,
    `sampling_rate` and `channels` of what was decoded.

    Args:
        model: model folder or Hub id (default: `default_model_location()` on the actor's machine).
        device: "auto" (the actor's GPU when Ray assigned it one, else CPU), "cpu", "cuda".
        batch_size: clips per model call.
        window_hop: fast mode, seconds between windows (None: exact).
        channel: multi-channel audio: "first", "mean" or an index.
        windows: add per-window columns.
        num_threads: torch CPU threads; default: the CPUs Ray assigned to this actor (so actors do not
            oversubscribe the cores they share).
        dtype: model precision: "float32" (default, exact), "bfloat16", "float16" or "auto" (see
            `DistillMOSScorer.from_pretrained`).
        checks: add the input checks' columns (`speech_share`, `loudness_lufs`, `clipped_share`, `bandwidth_hz`;
            their warnings join `<column>_warning`).

    A calibrated model adds `<column>_low` / `<column>_high`. Each output table carries the actor's provenance
    record in its schema metadata (`distill_mos.provenance.PARQUET_METADATA_KEY`).
    """

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        batch_size: int = 8,
        window_hop: float | None = None,
        channel: str | int = "first",
        windows: bool = False,
        column: str = "mos",
        audio_column: str | None = None,
        keep_audio: bool = False,
        file_details: bool = False,
        num_threads: int | None = None,
        dtype: str = "float32",
        checks: bool = False,
    ):
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one "Loading weights" bar per actor is noise in the driver's log
        threads = num_threads or max(1, int(_assigned("CPU")) or 1)
        torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if _assigned("GPU") >= 1 and torch.cuda.is_available() else "cpu"
        from .scorer import DistillMOSScorer

        self.scorer = DistillMOSScorer.from_pretrained(
            model, device=device, batch_size=batch_size, window_hop=window_hop, dtype=dtype, checks=checks
        )
        self.channel, self.windows, self.column = channel, windows, column
        self.audio_column, self.keep_audio, self.file_details = audio_column, keep_audio, file_details

    def _input_column(self, names: Sequence[str]) -> str:
        if self.audio_column is not None:
            if self.audio_column not in names:
                raise ValueError(f"the batch has no column {self.audio_column!r}; its columns are {list(names)}")
            return self.audio_column
        for name in INPUT_COLUMNS:
            if name in names:
                return name
        raise ValueError(f"the batch has none of the columns {INPUT_COLUMNS}; its columns are {list(names)}")

    @staticmethod
    def _item(kind: str, value, rate=None):
        """One row's input -> the scorer's `Item`."""
        from .scorer import Item

        if kind in ("path", "file"):
            return Item.file(value)
        if kind == "bytes":
            return Item.encoded(value)
        if kind == "array":
            return Item.array(np.asarray(value), rate)
        return Item.audio(value)

    def __call__(self, batch):
        """`batch`: a pyarrow Table (batch_format="pyarrow") or a dict of numpy arrays -> a pyarrow Table."""
        import pyarrow as pa

        from .results import result_columns

        table = batch if isinstance(batch, pa.Table) else pa.Table.from_pydict({k: list(v) for k, v in batch.items()})
        kind = self._input_column(table.column_names)
        values = table.column(kind).to_pylist()
        if kind == "file" and "file_bytes" in table.column_names:  # the exact name (files_dataset)
            values = [os.fsdecode(name) for name in table.column("file_bytes").to_pylist()]
            table = table.drop_columns(["file_bytes"])
        rates = table.column("sampling_rate").to_pylist() if kind == "array" else [None] * len(values)
        items = [self._item(kind, value, rate) for value, rate in zip(values, rates)]
        columns = result_columns(
            list(self.scorer.score_items(items, self.channel)), self.column, windows=self.windows,
            details=self.file_details, interval=self.scorer.interval is not None, checks=self.scorer.checks,
        )
        if not self.keep_audio and kind in ("audio", "bytes", "array"):
            table = table.drop_columns([kind])
        if "sampling_rate" in table.column_names:  # the input's own column (arrays) stays as it is
            columns.pop("sampling_rate", None)
        # Declared types: a batch where every row failed still has float/string columns, never "null".
        floats, ints, strings = pa.float64(), pa.int64(), pa.string()
        types = {"duration_s": floats, "sampling_rate": ints, "channels": ints, self.column: floats,
                 f"{self.column}_low": floats, f"{self.column}_high": floats, **dict.fromkeys(CHECK_COLUMNS, floats)}
        for name, values in columns.items():
            kind_of = types.get(name, pa.list_(floats) if name.startswith(f"{self.column}_window") else strings)
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(name, pa.array(values, kind_of))
        from .provenance import parquet_metadata

        return table.replace_schema_metadata({**(table.schema.metadata or {}), **parquet_metadata(self.scorer.provenance)})


def actor_pool_options(
    num_actors: int | None = None,
    num_gpus_per_actor: float | None = None,
    num_cpus_per_actor: float = 1,
    reserve_cpus: float = 0,
    **predictor_kwargs,
) -> dict:
    """
    Keyword arguments for `ds.map_batches(DistillMOSPredictor, **actor_pool_options(...))`, sized to the cluster
    Ray is connected to: one actor per GPU when the cluster has GPUs (each actor gets one), else one per
    `num_cpus_per_actor` CPUs, minus `reserve_cpus` (leave CPUs for read tasks of a streaming source: on a 2-CPU
    machine, actors holding every CPU while a read task waits for one never finish).
    """
    import ray
    from ray.data import ActorPoolStrategy

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    device = predictor_kwargs.get("device", "auto")
    if num_gpus_per_actor is None:
        num_gpus_per_actor = 1 if gpus and device != "cpu" else 0
    if num_actors is None:
        if num_gpus_per_actor:
            num_actors = max(1, int(gpus / num_gpus_per_actor))
        else:
            num_actors = max(1, int((resources.get("CPU", 1) - reserve_cpus) // num_cpus_per_actor))
    options = {
        "compute": ActorPoolStrategy(size=num_actors),
        "batch_format": "pyarrow",
        "num_cpus": num_cpus_per_actor,
        "fn_constructor_kwargs": predictor_kwargs,
    }
    if num_gpus_per_actor:
        options["num_gpus"] = num_gpus_per_actor
    options["batch_size"] = predictor_kwargs.get("batch_size", 8)
    return options


def files_dataset(files: Sequence[str | os.PathLike], num_blocks: int | None = None):
    """A Ray dataset of `{"file": path}` rows, split into enough blocks to keep every actor busy."""
    import ray

    files = [os.fsdecode(f) for f in files]
    if num_blocks is None:
        num_blocks = max(1, min(len(files), 4 * int(ray.cluster_resources().get("CPU", 1))))
    # Arrow strings are UTF-8: a name that is not (bytes \xff\xfe) travels as its bytes in `file_bytes`, and `file`
    # holds it as the command line tool writes it (\xNN, see distill_mos.cells).
    rows = [{"file": printable_path(f), "file_bytes": os.fsencode(f)} for f in files]
    return ray.data.from_items(rows, override_num_blocks=num_blocks)


def score_files_with_ray(
    files: Sequence[str | os.PathLike],
    address: str | None = None,
    num_actors: int | None = None,
    predictor: type = DistillMOSPredictor,
    progress: bool = False,
    **predictor_kwargs,
) -> Iterator[dict]:
    """
    Scores files on a Ray cluster (a local instance when `address` is None) and yields one dict per file, in input
    order, with the command line tool's columns (`FILE_COLUMNS`, plus `window_scores` / `window_start_times` with
    `windows=True`). `predictor_kwargs` go to `DistillMOSPredictor` (model, device, batch_size, window_hop,
    channel, windows, dtype).
    """
    from ray.data import DataContext

    if not files:
        return
    init_ray(address)
    context = DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    predictor_kwargs.update(file_details=True)
    windows = predictor_kwargs.get("windows", False)
    dataset = files_dataset(files).map_batches(predictor, **actor_pool_options(num_actors, **predictor_kwargs))
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            renamed = {"mos": "mos", "error": "mos_error", "warning": "mos_warning"}
            out = {name: row[renamed.get(name, name)] for name in FILE_COLUMNS}
            if windows:
                out.update({name: row[f"mos_{name}"] or [] for name in WINDOW_COLUMNS})
            out.update({name: row[name] for name in (*INTERVAL_COLUMNS, *CHECK_COLUMNS) if name in row})
            yield out


def score_with_ray(
    source,
    output: str | os.PathLike,
    address: str | None = None,
    num_actors: int | None = None,
    audio_column: str | None = None,
    **predictor_kwargs,
) -> Path:
    """
    Scores `source` (a list of audio file paths, or a 🤗 `datasets.Dataset` / `IterableDataset` with an audio
    column) with Ray Data and writes one Parquet (`.parquet`) or CSV (`.csv`) file at `output`; returns its path.
    A dataset's audio column is not copied to the output; its other columns are, with `mos`, `mos_error`,
    `mos_warning` added.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq
    import ray
    from ray.data import DataContext

    output = Path(output)
    if output.suffix.lower() not in (".parquet", ".csv"):
        raise ValueError(f"{output}: the output must end in .parquet or .csv")
    init_ray(address)
    DataContext.get_current().execution_options.preserve_order = True
    reserve = 0
    if isinstance(source, Iterable) and not hasattr(source, "features"):
        dataset = files_dataset(list(source))
        predictor_kwargs.setdefault("file_details", True)
    else:
        import datasets

        if isinstance(source, datasets.IterableDataset):
            reserve = 1  # its read tasks need a CPU while the actors hold theirs
        column = audio_column or next((c for c in INPUT_COLUMNS if c in (source.column_names or [])), None)
        if column is None:
            raise ValueError(f"the dataset has none of the columns {INPUT_COLUMNS}; pass audio_column=")
        feature = source.features[column] if source.features else None
        if type(feature).__name__ == "Audio" and getattr(feature, "decode", False):
            source = source.cast_column(column, datasets.Audio(decode=False))  # decoded by the actors, row by row
        dataset = ray.data.from_huggingface(source)
        predictor_kwargs["audio_column"] = column
    dataset = dataset.map_batches(
        DistillMOSPredictor, **actor_pool_options(num_actors, reserve_cpus=reserve, **predictor_kwargs)
    )
    # Written as <output>.partial and renamed when complete, like the command line tool's output.
    tmp = output.with_name(output.name + ".partial")
    writer, schema = None, None
    try:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            if output.suffix.lower() == ".csv":
                batch = pa.table({n: _csv_column(batch.column(n)) for n in batch.column_names})
            if writer is None:
                schema = _with_provenance(batch.schema, predictor_kwargs)
                writer = (pq.ParquetWriter(tmp, schema) if output.suffix.lower() == ".parquet"
                          else pa_csv.CSVWriter(tmp, schema))
            writer.write_table(batch.cast(schema))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError("nothing to score: the source is empty")
    os.replace(tmp, output)
    if output.suffix.lower() == ".csv":  # CSV has no metadata: the record goes beside it, as the CLI's does
        from .provenance import PARQUET_METADATA_KEY, Provenance, write_sidecar

        write_sidecar(output, Provenance.from_dict(json.loads(schema.metadata[PARQUET_METADATA_KEY])))
    return output


def _with_provenance(schema, predictor_kwargs: dict):
    """The output schema with the provenance record: the actors' (in their tables' metadata), else the driver's."""
    from .provenance import PARQUET_METADATA_KEY, calibration_at, describe, parquet_metadata
    from .scorer import default_model_location

    if PARQUET_METADATA_KEY in (schema.metadata or {}):
        return schema
    location = predictor_kwargs.get("model") or default_model_location()
    record = describe(location, precision=predictor_kwargs.get("dtype", "float32"), backend="torch",
                      device=predictor_kwargs.get("device", "auto"), window_hop_s=predictor_kwargs.get("window_hop"),
                      calibration=calibration_at(location))
    return schema.with_metadata({**(schema.metadata or {}), **parquet_metadata(record)})


def _csv_column(column):
    """CSV has no lists: per-window columns become "a;b;c" as in the command line tool's CSV."""
    import pyarrow as pa

    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        return pa.array([None if v is None else ";".join(map(str, v)) for v in column.to_pylist()], pa.string())
    return column
