"""
Reading labelled speech sets (audio + human ratings) from the sources the evaluation and fine-tuning accept: a CSV
with `file` (relative to the CSV) and `mos` columns, an audiofolder (audio files + metadata.csv / metadata.jsonl), a
folder written by `save_to_disk`, or a Hub dataset id. Torch-free; `datasets` is imported only where a source needs it.

Two readers share the source handling and the column guessing:
- `load_csv` / `load_any_dataset` + `normalise_dataset`: a normalised `datasets.Dataset` (`audio`, `human_mos`,
  `item`[, `system`]) for scoring a whole set (`eval/benchmark.py`);
- `read_label_rows`: one `LabelRow` per row with its rating still unparsed and its audio undecoded, so that a caller
  can check every row on its own and lose only the bad ones (`distill_mos.finetune`).
"""

import csv
import math
from dataclasses import dataclass
from pathlib import Path

# Column names tried, in order, when a source does not name its columns.
MOS_COLUMNS = ("mos", "MOS", "human_mos", "mean_opinion_score", "score", "rating")
SYSTEM_COLUMNS = ("system", "system_id", "sys_id", "condition", "condition_id")
ID_COLUMNS = ("file", "file_name", "filename", "path", "id", "utt_id", "sample_id")
# Column names of the normalised set.
AUDIO, LABEL, SYSTEM, ITEM = "audio", "human_mos", "system", "item"


class LabelSourceError(ValueError):
    """A problem with a label source as a whole (no such file, missing column, no rated row, ...)."""


# --- label values -----------------------------------------------------------------------------------------------


def _is_empty(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value) -> float:
    """The cell as a float; raises ValueError / TypeError for a cell that is not a number."""
    return float(value.strip() if isinstance(value, str) else value)


def parse_label(value) -> tuple[float | None, str | None]:
    """(number, None), (None, None) for an empty cell (unrated), or (None, reason) for a bad one (checked per row)."""
    if _is_empty(value):
        return None, None
    try:
        number = _number(value)
    except (TypeError, ValueError):
        return None, f"label {value!r} is not a number"
    if not math.isfinite(number):
        return None, f"label is {number} (not a finite number)"
    return number, None


def float_or_none(value) -> float | None:
    """A rating as a number, None when unrated (empty or not finite); raises `LabelSourceError` for a non-number."""
    if _is_empty(value):
        return None
    try:
        number = _number(value)
    except (TypeError, ValueError):
        raise LabelSourceError(f"not a number in the MOS column: {value!r}") from None
    return number if math.isfinite(number) else None


# --- columns ----------------------------------------------------------------------------------------------------


def guess_audio_column(dataset) -> str:
    """The first `datasets.Audio` column, else "audio"."""
    import datasets

    return next((c for c, f in dataset.features.items() if isinstance(f, datasets.Audio)), "audio")


def guess_mos_column(columns) -> str | None:
    return next((c for c in MOS_COLUMNS if c in columns), None)


def guess_id_column(columns, audio_column: str) -> str | None:
    return next((c for c in ID_COLUMNS if c in columns and c != audio_column), None)


def pick_system_column(system_column, columns, where) -> str | None:
    """`system_column` checked against `columns`; "auto" picks the first of `SYSTEM_COLUMNS`; None/""/"none": none."""
    if system_column in (None, "", "none"):
        return None
    if system_column == "auto":
        return next((c for c in SYSTEM_COLUMNS if c in columns), None)
    if system_column not in columns:
        raise LabelSourceError(f"{where}: no system column {system_column!r}; its columns are {columns}")
    return system_column


# --- sources ----------------------------------------------------------------------------------------------------


def read_csv_table(path: str | Path, needed=()) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a CSV (a .tsv is read tab-separated); raises `LabelSourceError` for a missing column."""
    path = Path(path)
    if not path.is_file():
        raise LabelSourceError(f"{path}: no such labels file")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        columns = reader.fieldnames or []
        rows = list(reader)
    for column in needed:
        if column is not None and column not in columns:
            raise LabelSourceError(f"{path}: no column {column!r}; its columns are {columns}")
    return columns, rows


def csv_audio_path(csv_path: Path, name: str) -> Path:
    """A CSV's file name, relative to the CSV's folder unless absolute."""
    return Path(name) if Path(name).is_absolute() else csv_path.parent / name


def is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "dataset_info.json").is_file() and (folder / "state.json").is_file()
    )


def is_audiofolder(folder: Path) -> bool:
    return folder.is_dir() and any((folder / f"metadata.{ext}").is_file() for ext in ("csv", "jsonl"))


def load_any_dataset(source: str, split: str | None = None, config: str | None = None, audiofolder: bool = False):
    """A saved dataset folder, an audiofolder, or a Hub id -> one `datasets.Dataset` split."""
    import datasets

    folder = Path(source)
    if audiofolder or folder.is_dir():
        if not folder.is_dir():
            raise LabelSourceError(f"{source}: no such folder")
        if is_saved_dataset(folder):
            loaded = datasets.load_from_disk(str(folder))
        elif audiofolder:
            loaded = datasets.load_dataset("audiofolder", data_dir=str(folder))
        else:  # a local dataset repository (parquet, csv + audio, ...): datasets picks the builder
            try:
                loaded = datasets.load_dataset(str(folder), name=config)
            except Exception as error:  # noqa: BLE001
                raise LabelSourceError(
                    f"cannot load the dataset folder {source}: {type(error).__name__}: {error}") from None
    else:
        try:
            loaded = datasets.load_dataset(source, name=config, split=split)
        except Exception as error:  # noqa: BLE001 - offline, missing, gated, ... : say which and why
            raise LabelSourceError(f"cannot load dataset {source!r}: {type(error).__name__}: {error}") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            if len(loaded) == 1:
                split = next(iter(loaded))
            elif "test" in loaded:
                split = "test"
            else:
                raise LabelSourceError(f"{source}: several splits {list(loaded)}; choose one with --split")
        if split not in loaded:
            raise LabelSourceError(f"{source}: no split {split!r}; its splits are {list(loaded)}")
        loaded = loaded[split]
    return loaded


# --- the normalised set (scoring a whole set) --------------------------------------------------------------------


def load_csv(path: str | Path, file_column: str = "file", mos_column: str = "mos", system_column: str | None = "auto",
             keep_unrated: bool = False):
    """A CSV with `file` (relative to the CSV) and `mos` columns -> the normalised `datasets.Dataset`."""
    import datasets

    path = Path(path)
    columns, rows = read_csv_table(path, (file_column, mos_column))
    system_column = pick_system_column(system_column, columns, path)
    data = {AUDIO: [], LABEL: [], ITEM: []}
    if system_column:
        data[SYSTEM] = []
    for row in rows:
        label = float_or_none(row[mos_column])
        if label is None and not keep_unrated:
            continue  # unrated (e.g. the reference of a MUSHRA/ACR test)
        name = row[file_column].strip()
        data[AUDIO].append(str(csv_audio_path(path, name).resolve()))
        data[LABEL].append(label)
        data[ITEM].append(name)
        if system_column:
            data[SYSTEM].append(str(row[system_column]))
    if not data[ITEM]:
        raise LabelSourceError(f"{path}: no rows with a MOS label")
    features = {AUDIO: datasets.Audio(), LABEL: datasets.Value("float64"), ITEM: datasets.Value("string")}
    if system_column:
        features[SYSTEM] = datasets.Value("string")
    return datasets.Dataset.from_dict(data, features=datasets.Features(features))


def normalise_dataset(dataset, audio_column: str | None = None, mos_column: str | None = None,
                      system_column: str | None = "auto", id_column: str | None = None, keep_unrated: bool = False):
    """Any dataset with audio and MOS columns -> the normalised one (audio, human_mos, item[, system])."""
    import datasets
    import pyarrow.compute as pc

    columns = dataset.column_names
    audio_column = audio_column or guess_audio_column(dataset)
    if audio_column not in columns:
        raise LabelSourceError(f"the dataset has no audio column {audio_column!r}; its columns are {columns}")
    if mos_column is None:
        mos_column = guess_mos_column(columns)
        if mos_column is None:
            raise LabelSourceError(f"no MOS column found (tried {list(MOS_COLUMNS)}); name it with --mos-column. "
                                   f"The dataset's columns are {columns}")
    elif mos_column not in columns:
        raise LabelSourceError(f"the dataset has no MOS column {mos_column!r}; its columns are {columns}")
    system_column = pick_system_column(system_column, columns, "the dataset")
    if id_column is None:
        id_column = guess_id_column(columns, audio_column)
    elif id_column not in columns:
        raise LabelSourceError(f"the dataset has no id column {id_column!r}; its columns are {columns}")

    if not keep_unrated:
        dataset = dataset.filter(lambda labels: [float_or_none(v) is not None for v in labels],
                                 input_columns=[mos_column], batched=True, keep_in_memory=True)
        if len(dataset) == 0:
            raise LabelSourceError(f"no rows with a MOS label in column {mos_column!r}")
    labels = [float_or_none(v) for v in dataset[mos_column]]
    if id_column:
        items = [str(v) for v in dataset[id_column]]
    else:  # the audio files' paths, read without decoding; else the row numbers
        table = dataset.cast_column(audio_column, datasets.Audio(decode=False)).select_columns([audio_column])
        paths = pc.struct_field(table.with_format("arrow")[:][audio_column], "path").to_pylist()
        items = [p if p else str(i) for i, p in enumerate(paths)]
        if len(set(items)) < len(items):
            items = [str(i) for i in range(len(items))]
    systems = [str(v) for v in dataset[system_column]] if system_column else None

    # Keep the audio as stored (native sampling rate, all channels): the scorer picks the channel and resamples.
    audio = dataset.select_columns([audio_column]).cast_column(audio_column, datasets.Audio())
    if audio_column != AUDIO:
        audio = audio.rename_column(audio_column, AUDIO)
    audio = audio.add_column(LABEL, labels).add_column(ITEM, items)
    if systems is not None:
        audio = audio.add_column(SYSTEM, systems)
    return audio


# --- row by row (checking every row) -----------------------------------------------------------------------------


@dataclass
class LabelRow:
    """
    One row of a label source, unchecked: `item` names it in messages (the file name, an id column's value or
    "labels.csv line 7"), `label` is the cell as read, `audio` a path (CSV) or an undecoded `datasets` Audio value
    (None when the row gives none), `group` the group column's cell (None without a group column).
    """

    item: str
    label: object
    audio: object
    group: object = None


def read_label_rows(
    source: str | Path,
    *,
    file_column: str = "file",
    mos_column: str | None = None,
    audio_column: str | None = None,
    group_column: str | None = None,
    split: str | None = None,
) -> tuple[list[LabelRow], str]:
    """
    (rows, the source's name) of any label source: a .csv/.tsv file (or any file) is read as a CSV with
    `file_column` and `mos_column` (default "mos"); anything else as a dataset (`load_any_dataset`) whose audio,
    MOS and id columns are guessed unless given. Raises `LabelSourceError` for a problem of the whole source.
    """
    path = Path(source)
    if path.suffix.lower() in (".csv", ".tsv") or path.is_file():
        return _csv_label_rows(path, file_column, mos_column or "mos", group_column), str(path)
    return _dataset_label_rows(str(source), audio_column, mos_column, group_column, split), str(source)


def _csv_label_rows(path: Path, file_column: str, mos_column: str, group_column: str | None) -> list[LabelRow]:
    _, table = read_csv_table(path, (file_column, mos_column, group_column))
    rows = []
    for number, row in enumerate(table, start=2):  # line numbers as an editor shows them (header = line 1)
        name = (row[file_column] or "").strip()
        group = row.get(group_column) if group_column else None
        if not name:
            rows.append(LabelRow(f"{path.name} line {number}", row[mos_column], None, group))
        else:
            rows.append(LabelRow(name, row[mos_column], str(csv_audio_path(path, name)), group))
    return rows


def _dataset_label_rows(source: str, audio_column, mos_column, group_column, split) -> list[LabelRow]:
    import datasets

    dataset = load_any_dataset(source, split=split, audiofolder=is_audiofolder(Path(source)))
    columns = dataset.column_names
    audio_column = audio_column or guess_audio_column(dataset)
    mos_column = mos_column or guess_mos_column(columns)
    for role, column in (("audio", audio_column), ("MOS", mos_column), ("group", group_column)):
        if role != "group" and column is None:
            raise LabelSourceError(f"{source}: no {role} column found; name it (--mos-column). "
                                   f"Its columns are {columns}")
        if column is not None and column not in columns:
            raise LabelSourceError(f"{source}: no {role} column {column!r}; its columns are {columns}")
    id_column = guess_id_column(columns, audio_column)
    # Undecoded audio values ({"path", "bytes"}): each row is decoded later on its own, so one bad file loses one row.
    audio = dataset.cast_column(audio_column, datasets.Audio(decode=False))[audio_column]
    labels = dataset[mos_column]
    groups = dataset[group_column] if group_column else [None] * len(labels)
    ids = dataset[id_column] if id_column else [None] * len(labels)
    rows = []
    for index, (value, label, group, row_id) in enumerate(zip(audio, labels, groups, ids)):
        item = str(row_id) if row_id is not None else (value or {}).get("path") or f"row {index}"
        rows.append(LabelRow(item, label, value, group))
    return rows
