"""Labelled clips for fine-tuning: reading the label sources, checking every row, label scales and grouped folds."""

import csv
import importlib.util
import math
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# The checkout's root, holding eval/ (label loading and the `mos_metrics` module) and the remote-code .py files.
ROOT = Path(__file__).resolve().parents[2]
EVAL_DIR = ROOT / "eval"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aac", ".webm", ".aiff", ".aif"}


class FinetuneError(ValueError):
    """A usage problem (bad path, missing column, too few usable rows, ...): printed without a traceback."""


@dataclass
class RowIssue:
    """A problem with one row of the labels: `level` "error" (the row is left out) or "warning" (it is kept)."""

    item: str
    problem: str
    level: str = "error"

    def __str__(self) -> str:
        return f"{self.level}: {self.item}: {self.problem}"


@dataclass
class LabelledClip:
    """
    One rated clip. `label` is the rating as given (any scale); `target` is that rating mapped onto the model's MOS
    range (what the model is trained towards). `audio` is a path (CSV) or an undecoded `datasets` Audio value.
    """

    item: str
    label: float
    target: float
    audio: object
    group: str | None = None


@dataclass
class LabelledSet:
    """The usable rows of a label source, plus what was wrong with the others (nothing is dropped silently)."""

    name: str
    clips: list[LabelledClip]
    issues: list[RowIssue] = field(default_factory=list)
    n_unrated: int = 0  # rows without a rating (e.g. the hidden reference of a MUSHRA test): skipped, not errors
    label_range: tuple[float, float] | None = None
    group_column: str | None = None

    @property
    def errors(self) -> list[RowIssue]:
        return [issue for issue in self.issues if issue.level == "error"]


# --- label scales ---------------------------------------------------------------------------------------------


def label_mapper(label_range: tuple[float, float] | None, mos_min: float, mos_max: float):
    """
    (label -> MOS target) for labels on `label_range` (e.g. MUSHRA `(0, 100)`), linearly onto `mos_min..mos_max`;
    labels already on the MOS scale (`label_range` None) are used as they are.
    """
    if label_range is None:
        return lambda label: label
    low, high = label_range
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        raise FinetuneError(f"--label-range needs two finite numbers LOW < HIGH, got {low:g} {high:g}.")
    return lambda label: mos_min + (label - low) / (high - low) * (mos_max - mos_min)


def is_mos_scale(label_range: tuple[float, float] | None, mos_min: float = 1.0, mos_max: float = 5.0) -> bool:
    """Whether labels are on the model's MOS scale, so that an RMSE between them and predictions means something."""
    return label_range is None or (float(label_range[0]), float(label_range[1])) == (float(mos_min), float(mos_max))


def _parse_label(value) -> tuple[float | None, str | None]:
    """(number, None), (None, None) for an empty cell (unrated), or (None, reason) for a bad one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return None, f"label {value!r} is not a number"
    if not math.isfinite(number):
        return None, f"label is {number} (not a finite number)"
    return number, None


# --- reading the sources eval/benchmark.py reads -------------------------------------------------------------


def _benchmark_module():
    """eval/benchmark.py of this checkout (dataset loading shared with the evaluation)."""
    return _load_eval_module("benchmark", EVAL_DIR / "benchmark.py")


def _load_eval_module(name: str, path: Path):
    module_name = f"_distill_mos_eval_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if not path.is_file():
        raise FinetuneError(
            f"{path} is missing: fine-tuning reads dataset sources and computes its figures with the checkout's eval/ "
            "folder; run it from a git checkout installed with `pip install -e \".[eval]\" accelerate`."
        )
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def mos_metric():
    """The `evaluate` metric of eval/mos_metrics (PCC, SRCC, KTAU, RMSE), loaded offline from its folder."""
    import evaluate

    return evaluate.load(str(EVAL_DIR / "mos_metrics"))


def load_labels(
    source: str | Path,
    *,
    label_range: tuple[float, float] | None = None,
    group_column: str | None = None,
    file_column: str = "file",
    mos_column: str | None = None,
    audio_column: str | None = None,
    split: str | None = None,
    mos_min: float = 1.0,
    mos_max: float = 5.0,
) -> LabelledSet:
    """
    Reads a labelled set from any source `eval/benchmark.py` reads: a CSV with `file` (relative to the CSV) and `mos`
    columns, an audiofolder (audio files with metadata.csv / metadata.jsonl), a folder written by `save_to_disk`, or
    a Hub dataset id. Every row is checked: a row with a bad label (not a number, NaN, outside the scale) or a
    missing group is reported in `issues` and left out, and all other rows are kept. Rows without a rating are
    skipped and counted (`n_unrated`). Audio is not decoded here (see `features.decode_clip`).
    """
    to_target = label_mapper(label_range, mos_min, mos_max)
    low, high = label_range if label_range is not None else (mos_min, mos_max)
    source_path = Path(source)
    if source_path.suffix.lower() in (".csv", ".tsv") or source_path.is_file():
        rows, name = _csv_rows(source_path, file_column, mos_column or "mos", group_column), str(source_path)
    else:
        rows, name = _dataset_rows(str(source), audio_column, mos_column, group_column, split), str(source)

    labelled = LabelledSet(name=name, clips=[], label_range=label_range, group_column=group_column)
    for item, raw_label, audio, group in rows:
        label, problem = _parse_label(raw_label)
        if label is None and problem is None:
            labelled.n_unrated += 1
            continue
        if problem is None and audio is None:
            problem = "no audio given (empty file name or audio value)"
        if problem is None and not low <= label <= high:
            hint = "" if label_range is not None else (
                " (labels on another scale need --label-range LOW HIGH, e.g. 0 100 for MUSHRA)")
            problem = f"label {label:g} is outside the scale {low:g}..{high:g}{hint}"
        if problem is None and group_column is not None and (group is None or not str(group).strip()):
            problem = f"no value in the group column {group_column!r}"
        if problem is not None:
            labelled.issues.append(RowIssue(item, problem))
            continue
        group = None if group_column is None else str(group).strip()
        labelled.clips.append(LabelledClip(item, label, float(to_target(label)), audio, group))

    if group_column is not None:
        sizes = Counter(clip.group for clip in labelled.clips)
        for clip in labelled.clips:
            if sizes[clip.group] == 1:
                labelled.issues.append(RowIssue(
                    clip.item,
                    f"is the only file of group {clip.group!r} in column {group_column!r}; it is kept, but check "
                    "that the column names the stimulus (or talker) the files share",
                    level="warning",
                ))
    return labelled


def _csv_rows(path: Path, file_column: str, mos_column: str, group_column: str | None):
    if not path.is_file():
        raise FinetuneError(f"{path}: no such labels file")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        columns = reader.fieldnames or []
        table = list(reader)
    for needed in (file_column, mos_column, group_column):
        if needed is not None and needed not in columns:
            raise FinetuneError(f"{path}: no column {needed!r}; its columns are {columns}")
    rows = []
    for number, row in enumerate(table, start=2):  # line numbers as an editor shows them (header = line 1)
        name = (row[file_column] or "").strip()
        if not name:
            group = row.get(group_column) if group_column else None
            rows.append((f"{path.name} line {number}", row[mos_column], None, group))
            continue
        file = Path(name) if Path(name).is_absolute() else path.parent / name
        rows.append((name, row[mos_column], str(file), row.get(group_column) if group_column else None))
    return rows


def _dataset_rows(source: str, audio_column, mos_column, group_column, split):
    import datasets

    benchmark = _benchmark_module()
    folder = Path(source)
    audiofolder = folder.is_dir() and any((folder / f"metadata.{ext}").is_file() for ext in ("csv", "jsonl"))
    try:
        dataset = benchmark.load_any_dataset(source, split=split, audiofolder=audiofolder)
    except benchmark.BenchmarkError as error:
        raise FinetuneError(str(error)) from None
    columns = dataset.column_names
    if audio_column is None:
        audio_column = next((c for c, f in dataset.features.items() if isinstance(f, datasets.Audio)), "audio")
    if mos_column is None:
        mos_column = next((c for c in benchmark.MOS_COLUMNS if c in columns), None)
    for role, column in (("audio", audio_column), ("MOS", mos_column), ("group", group_column)):
        if role != "group" and column is None:
            raise FinetuneError(f"{source}: no {role} column found; name it (--mos-column). Its columns are {columns}")
        if column is not None and column not in columns:
            raise FinetuneError(f"{source}: no {role} column {column!r}; its columns are {columns}")
    id_column = next((c for c in benchmark.ID_COLUMNS if c in columns and c != audio_column), None)
    # Undecoded audio values ({"path", "bytes"}): each row is decoded later on its own, so one bad file loses one row.
    audio = dataset.cast_column(audio_column, datasets.Audio(decode=False))[audio_column]
    labels = dataset[mos_column]
    groups = dataset[group_column] if group_column else [None] * len(labels)
    ids = dataset[id_column] if id_column else [None] * len(labels)
    rows = []
    for index, (value, label, group, row_id) in enumerate(zip(audio, labels, groups, ids)):
        item = str(row_id) if row_id is not None else (value or {}).get("path") or f"row {index}"
        rows.append((item, label, value, group))
    return rows


# --- folds ----------------------------------------------------------------------------------------------------


def grouped_folds(groups: list[str], k: int, seed: int) -> list[list[int]]:
    """
    Splits row indices into `k` test folds such that every group's rows are in one fold only (no group is in both
    the training and the test part of a split), with fold sizes as even as the groups allow: groups are shuffled
    with `seed`, then taken largest first, each into the currently smallest fold. Returns the test rows of each fold.
    """
    if k < 2:
        raise FinetuneError(f"--cv needs at least 2 folds, got {k}.")
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    if len(members) < k:
        raise FinetuneError(f"{k}-fold cross-validation needs at least {k} groups, but there are {len(members)}.")
    names = sorted(members)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda g: len(members[g]), reverse=True)  # stable: equal sizes keep the shuffled order
    folds: list[list[int]] = [[] for _ in range(k)]
    for name in names:
        smallest = min(range(k), key=lambda f: (len(folds[f]), f))
        folds[smallest].extend(members[name])
    return [sorted(fold) for fold in folds]


def grouped_holdout(groups: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """
    (training rows, validation rows): about `fraction` of the rows, as whole groups, held out for early stopping.
    Returns no validation rows when `fraction` is 0 or there are too few groups to spare one.
    """
    if not 0 <= fraction < 1:
        raise FinetuneError(f"the validation fraction must be in [0, 1), got {fraction}.")
    everything = list(range(len(groups)))
    names = sorted(set(groups))
    if fraction == 0 or len(names) < 3:
        return everything, []
    random.Random(seed).shuffle(names)
    wanted, held = fraction * len(groups), set()
    count = Counter(groups)
    for name in names:
        if sum(count[g] for g in held) >= wanted or len(held) == len(names) - 2:
            break
        held.add(name)
    validation = [i for i in everything if groups[i] in held]
    return [i for i in everything if groups[i] not in held], validation
