"""
The Space's results in words and data: Markdown for the page, the JSON of the API, the table rows and the CSV
download. Pure functions of `FileScore`s; no gradio.
"""

from __future__ import annotations

import csv
import math
import tempfile
import time
from pathlib import Path

from distill_mos import FileScore
from distill_mos.cells import neutralise_row
from scoring import Example
from settings import WINDOW_SECONDS

ACR_LABELS = ("bad", "poor", "fair", "good", "excellent")
TABLE_COLUMNS = ["file", "MOS", "quality", "duration (s)", "error"]
CSV_COLUMNS = ["file", "mos", "quality", "duration_s", "sampling_rate", "channels", "error", "warning"]
MINUS = "−"  # U+2212, as in the headline's "B − A": the signed difference uses the same sign
CSV_DIR = Path(tempfile.gettempdir()) / "distill-mos-space"


def acr_label(mos: float) -> str:
    """The ACR category nearest to a MOS: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent."""
    return ACR_LABELS[min(4, max(0, math.floor(mos + 0.5) - 1))]


def signed(value: float, digits: int = 2) -> str:
    """`+0.31` / `−0.31` (the typographic minus, as in "B − A")."""
    return f"{value:+.{digits}f}".replace("-", MINUS)


def channels_text(channels: int | None) -> str:
    if channels is None:
        return "?"
    return "1 channel (mono)" if channels == 1 else f"{channels} channels (the first is scored)"


def sentence(text: str) -> str:
    """A reason as a sentence: capital first letter, final full stop (the library's reasons are lower case)."""
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", ".)")) else text + "."


def is_silent(result: FileScore) -> bool:
    return bool(result.warning and "silent" in result.warning)


def has_score(result: FileScore) -> bool:
    """A score that says something about quality: scored, and not silent."""
    return result.ok and not is_silent(result)


def window_centres(result: FileScore) -> list[float]:
    """Centre time (seconds) of each scored window; a clip shorter than a window has its window's centre mid-clip."""
    width = min(WINDOW_SECONDS, result.duration or WINDOW_SECONDS)
    return [start + width / 2 for start in result.window_start_times]


def result_markdown(result: FileScore, example: Example | None = None) -> str:
    """The one-clip result: MOS and ACR label, or a readable error; then what was read."""
    if result.error:
        return f"### ⚠️ Could not score this file\n\n{sentence(result.error)}"
    lines = []
    if is_silent(result):
        lines += [
            "### ⚠️ No meaningful score: the audio is silent",
            "",
            "Every sample is zero, so there is no speech to rate. "
            f"(The model still outputs {result.mos:.2f} for it, which says nothing about quality.)",
        ]
    else:
        lines.append(f"### Predicted MOS {result.mos:.2f} / 5 — {acr_label(result.mos)}")
        if example is not None:
            lines += ["", f"Human listening-test MOS of this GenSpeech clip, condition {example.condition}: "
                          f"**{example.human_mos:.2f}**"]
        if result.warning:
            lines += ["", f"⚠️ {sentence(result.warning)}"]
    windows = len(result.window_scores)
    lines += [
        "",
        f"Read: {result.duration:.2f} s · {result.sampling_rate} Hz · {channels_text(result.channels)}"
        f"{'' if result.sampling_rate == 16000 else ' · resampled to 16 kHz'}"
        f" · {windows} window{'s' if windows != 1 else ''} of {WINDOW_SECONDS} s",
    ]
    return "\n".join(lines)


def details(result: FileScore, example: Example | None = None, provenance=None) -> dict:
    """The machine-readable outcome (the API's answer); `provenance`: the scorer's, which made the score."""
    out = {
        "file": Path(result.path).name,
        "mos": None if result.mos is None else round(result.mos, 4),
        "quality": acr_label(result.mos) if has_score(result) else None,
        "duration_s": None if result.duration is None else round(result.duration, 4),
        "sampling_rate": result.sampling_rate,
        "channels": result.channels,
        "window_scores": [round(s, 4) for s in result.window_scores],
        "window_start_times": [round(s, 4) for s in result.window_start_times],
        "error": result.error,
        "warning": result.warning,
    }
    if result.checks is not None:
        out["checks"] = result.checks.to_dict()
    if result.mos_low is not None:
        out["mos_low"], out["mos_high"] = round(result.mos_low, 4), round(result.mos_high, 4)
    if example is not None:
        out["human_mos"] = round(example.human_mos, 4)
    if provenance is not None:
        out["provenance"] = provenance.to_dict()
    return out


def mos_difference(result_a: FileScore, result_b: FileScore) -> float | None:
    """B's MOS minus A's (positive: B is rated better); None when either has no meaningful score."""
    if not (has_score(result_a) and has_score(result_b)):
        return None
    return result_b.mos - result_a.mos


def comparison(result_a: FileScore, result_b: FileScore) -> dict:
    """The machine-readable comparison (the `/compare` API's answer): both clips' `details` and B - A."""
    difference = mos_difference(result_a, result_b)
    return {
        "a": details(result_a),
        "b": details(result_b),
        "difference": None if difference is None else round(difference, 4),
    }


def _table_text(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def note(result: FileScore) -> str:
    """The error, else the warning, as a sentence ("" when neither)."""
    if result.error:
        return sentence(result.error)
    return f"Warning: {sentence(result.warning)}" if result.warning else ""


def compare_markdown(result_a: FileScore, result_b: FileScore) -> str:
    """Both scores in a table, then the difference B − A in words."""
    difference = mos_difference(result_a, result_b)
    if difference is None:
        headline = f"### ⚠️ No difference: one of the clips has no meaningful score"
    elif abs(difference) < 0.005:
        headline = f"### B {MINUS} A: 0.00 MOS (the same predicted quality)"
    else:
        better = "B" if difference > 0 else "A"
        headline = f"### B {MINUS} A: {signed(difference)} MOS ({better} is rated better)"
    lines = [headline, "", "| clip | file | MOS | quality | duration | note |", "|---|---|---|---|---|---|"]
    for name, result in (("A", result_a), ("B", result_b)):
        shown = has_score(result)
        lines.append(
            f"| **{name}** | {_table_text(Path(result.path).name)} | {f'{result.mos:.2f}' if shown else '—'} | "
            f"{acr_label(result.mos) if shown else '—'} | "
            f"{'—' if result.duration is None else f'{result.duration:.2f} s'} | {_table_text(note(result))} |"
        )
    lines += ["", "The curves show each clip's window scores on one time axis (window centres, seconds)."]
    return "\n".join(lines)


def table_row(result: FileScore) -> list:
    """One row of the "Several files" table (`TABLE_COLUMNS`)."""
    shown = has_score(result)
    return [
        Path(result.path).name,
        round(result.mos, 2) if shown else None,
        acr_label(result.mos) if shown else "",
        None if result.duration is None else round(result.duration, 2),
        note(result),
    ]


def csv_row(result: FileScore) -> dict:
    """One row of the CSV download (`CSV_COLUMNS`)."""
    return {
        "file": Path(result.path).name,
        "mos": "" if result.mos is None else round(result.mos, 6),
        "quality": acr_label(result.mos) if has_score(result) else "",
        "duration_s": "" if result.duration is None else round(result.duration, 4),
        "sampling_rate": result.sampling_rate or "",
        "channels": result.channels or "",
        "error": result.error or "",
        "warning": result.warning or "",
    }


def new_download_path(name: str, folder: Path = CSV_DIR) -> Path:
    """A new path `name` in its own temporary folder under `folder` (a download: a CSV, a figure). Files older than
    an hour are removed first, to keep the temp folder small on a long-running Space."""
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - 3600
    for old in folder.glob("*/*"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
                old.parent.rmdir()
        except OSError:
            pass
    return Path(tempfile.mkdtemp(dir=folder)) / name


def write_csv(rows: list[dict], columns: list[str], name: str, folder: Path = CSV_DIR) -> str:
    """
    Writes `rows` to a new file `name` (see `new_download_path`); returns its path. Uploads are anyone's files: a cell
    a spreadsheet would run as a formula (a file named "=cmd|..."), gets a leading ' (OWASP's CSV injection advice).
    """
    path = new_download_path(name, folder)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(neutralise_row(row) for row in rows)
    return str(path)
