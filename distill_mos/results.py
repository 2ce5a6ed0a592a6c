"""
The typed results of scoring and their one mapping to output columns (CLI rows, datasets and Ray columns),
importable without torch: `FileScore` for any input, `Score` for arrays, `ScoringFailure` for a clip the network could
not score, and `Item`, the inputs of `DistillMOSScorer.score_items`.
"""

import os
from dataclasses import dataclass, field

from .cells import printable_path
from .checks import InputChecks
from .columns import CHECK_COLUMNS, INTERVAL_COLUMNS, WINDOW_COLUMNS


@dataclass
class Score:
    """
    The score of one clip: `mos` (1..5) and, per analysis window, its score and start time in seconds; with a
    calibrated model, the interval `mos_low`..`mos_high`; with `checks=True`, the input checks.
    """

    mos: float
    window_scores: list[float] = field(default_factory=list)
    window_start_times: list[float] = field(default_factory=list)
    mos_low: float | None = None
    mos_high: float | None = None
    checks: InputChecks | None = None


@dataclass
class ScoringFailure:
    """A clip that was read but could not be scored: `reason` in words, `error_type` the exception's type, if any."""

    reason: str
    error_type: str | None = None


@dataclass
class FileScore:
    """
    The outcome for one input (a file, encoded bytes, an array or a 🤗 datasets audio value): a score, or `error`
    (then `mos` is None). `path` names the input when it has a name. `error_type` is set when the network, not the
    input, failed (e.g. "OutOfMemoryError"), so that a caller can word it without parsing `error`; `too_long` when
    the input was refused for running past the caller's `max_seconds` (its limit, not a fault of the file).
    Neither is an output column (`file_row`): `error` says both in words.
    """

    path: str | None
    mos: float | None = None
    duration: float | None = None
    sampling_rate: int | None = None
    channels: int | None = None
    window_scores: list[float] = field(default_factory=list)
    window_start_times: list[float] = field(default_factory=list)
    error: str | None = None
    warning: str | None = None
    error_type: str | None = None
    mos_low: float | None = None
    mos_high: float | None = None
    checks: InputChecks | None = None
    too_long: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Item:
    """
    One input of `DistillMOSScorer.score_items`, made by its constructors: `Item.file(path)`, `Item.encoded(data,
    name)` (an encoded file in memory), `Item.array(samples, sampling_rate, name)`, `Item.audio(value)` (a 🤗
    datasets Audio value: `{"array", "sampling_rate"}`, `{"bytes", "path"}` or an AudioDecoder) and
    `Item.failed(name, reason)` (known to be unreadable before it is read, e.g. a folder that cannot be listed:
    it keeps its place in the output).
    """

    kind: str
    value: object = None
    name: str | None = None
    sampling_rate: int | None = None

    @classmethod
    def file(cls, path: str | os.PathLike) -> "Item":
        return cls("file", path, str(path))

    @classmethod
    def encoded(cls, data: bytes, name: str | None = None) -> "Item":
        return cls("bytes", data, name)

    @classmethod
    def array(cls, samples, sampling_rate: int, name: str | None = None) -> "Item":
        return cls("array", samples, name, sampling_rate)

    @classmethod
    def audio(cls, value, name: str | None = None) -> "Item":
        if name is None and isinstance(value, dict):
            name = value.get("path") or None
        return cls("audio", value, name)

    @classmethod
    def failed(cls, name: str, reason: str) -> "Item":
        return cls("failed", reason, name)


def file_row(result: FileScore, windows: bool = False, extra_columns=()) -> dict:
    """
    The command line tool's row (`COLUMNS`, plus `WINDOW_COLUMNS` with `windows`, then `extra_columns`: any of
    `INTERVAL_COLUMNS` and `CHECK_COLUMNS`), rounded as it writes them.
    """
    row = {
        # a name that is not UTF-8 as \\xNN (see distill_mos.cells)
        "file": None if result.path is None else printable_path(result.path),
        "mos": None if result.mos is None else round(result.mos, 6),
        "duration_s": None if result.duration is None else round(result.duration, 4),
        "sampling_rate": result.sampling_rate,
        "channels": result.channels,
        "error": result.error,
        "warning": result.warning,
    }
    if windows:
        row["window_scores"] = [round(s, 6) for s in result.window_scores]
        row["window_start_times"] = [round(s, 4) for s in result.window_start_times]
    checks = result.checks.columns() if result.checks is not None else {}
    for name in extra_columns:
        if name in CHECK_COLUMNS:
            row[name] = checks.get(name)
        else:  # INTERVAL_COLUMNS
            value = getattr(result, name)
            row[name] = None if value is None else round(value, 6)
    return row


def from_file_row(row: dict) -> FileScore:
    """A `file_row` (or a row with those columns, as Ray yields them) back into a `FileScore`."""
    return FileScore(
        path=row["file"], mos=row["mos"], duration=row["duration_s"], sampling_rate=row["sampling_rate"],
        channels=row["channels"], error=row["error"], warning=row["warning"],
        **{name: list(row.get(name) or []) for name in WINDOW_COLUMNS},
        **{name: row.get(name) for name in INTERVAL_COLUMNS}, checks=InputChecks.from_columns(row),
    )


def result_columns(
    results: list[FileScore], column: str = "mos", windows: bool = False, warnings: bool = True, details: bool = False,
    interval: bool = False, checks: bool = False,
) -> dict[str, list]:
    """
    Columns of a table of results, one value per result: `column` (MOS, None where not scored), `<column>_error`,
    `<column>_warning` (with `warnings`), `<column>_window_scores` / `<column>_window_start_times` (with `windows`;
    None where not scored), `<column>_low` / `<column>_high` (with `interval`: a calibrated model), the input
    checks' `CHECK_COLUMNS` (with `checks`) and the file's `duration_s`, `sampling_rate`, `channels` (with
    `details`). Used by
    `add_mos_column` and Ray's `DistillMOSPredictor`, which declare these columns' types.
    """
    out = {column: [r.mos for r in results], f"{column}_error": [r.error for r in results]}
    if warnings:
        out[f"{column}_warning"] = [r.warning for r in results]
    if windows:
        for name in WINDOW_COLUMNS:
            out[f"{column}_{name}"] = [getattr(r, name) if r.mos is not None else None for r in results]
    if interval:
        out[f"{column}_low"] = [r.mos_low for r in results]
        out[f"{column}_high"] = [r.mos_high for r in results]
    if checks:
        for name in CHECK_COLUMNS:
            out[name] = [r.checks.columns()[name] if r.checks is not None else None for r in results]
    if details:
        out["duration_s"] = [r.duration for r in results]
        out["sampling_rate"] = [r.sampling_rate for r in results]
        out["channels"] = [r.channels for r in results]
    return out


__all__ = ["FileScore", "Item", "Score", "ScoringFailure", "file_row", "from_file_row", "result_columns"]
