"""Labelled clips for fine-tuning: reading the label sources, checking every row, label scales and grouped folds."""

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..labels import LabelSourceError, parse_label, read_label_rows

# The checkout's root, holding eval/mos_metrics (the figures) and the remote-code .py files.
ROOT = Path(__file__).resolve().parents[2]
EVAL_DIR = ROOT / "eval"


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


def mos_metric():
    """The `evaluate` metric of eval/mos_metrics (PCC, SRCC, KTAU, RMSE), loaded offline from its folder."""
    import evaluate

    return evaluate.load(str(EVAL_DIR / "mos_metrics"))


# --- reading and checking the rows -------------------------------------------------------------------------------


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
    Reads a labelled set from any source `distill_mos.labels` reads (as `eval/benchmark.py` does): a CSV with `file`
    (relative to the CSV) and `mos` columns, an audiofolder (audio files with metadata.csv / metadata.jsonl), a
    folder written by `save_to_disk`, or a Hub dataset id. Every row is checked: a row with a bad label (not a
    number, NaN, outside the scale) or a missing group is reported in `issues` and left out, and all other rows are
    kept. Rows without a rating are skipped and counted (`n_unrated`). Audio is not decoded here (see
    `model.decode_clip`).
    """
    to_target = label_mapper(label_range, mos_min, mos_max)
    low, high = label_range if label_range is not None else (mos_min, mos_max)
    try:
        rows, name = read_label_rows(source, file_column=file_column, mos_column=mos_column,
                                     audio_column=audio_column, group_column=group_column, split=split)
    except LabelSourceError as error:
        raise FinetuneError(str(error)) from None

    labelled = LabelledSet(name=name, clips=[], label_range=label_range, group_column=group_column)
    for row in rows:
        label, problem = parse_label(row.label)
        if label is None and problem is None:
            labelled.n_unrated += 1
            continue
        if problem is None and row.audio is None:
            problem = "no audio given (empty file name or audio value)"
        if problem is None and not low <= label <= high:
            hint = "" if label_range is not None else (
                " (labels on another scale need --label-range LOW HIGH, e.g. 0 100 for MUSHRA)")
            problem = f"label {label:g} is outside the scale {low:g}..{high:g}{hint}"
        if problem is None and group_column is not None and (row.group is None or not str(row.group).strip()):
            problem = f"no value in the group column {group_column!r}"
        if problem is not None:
            labelled.issues.append(RowIssue(row.item, problem))
            continue
        group = None if group_column is None else str(row.group).strip()
        labelled.clips.append(LabelledClip(row.item, label, float(to_target(label)), row.audio, group))

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
