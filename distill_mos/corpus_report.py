"""
Corpus reports: what a set of scores says about a corpus, as data (pandas DataFrames in a `CorpusReport`) and as one
self-contained HTML page (`write_html`).

    import distill_mos
    r = distill_mos.report("scores.csv", group_by="folder")  # or report(add_mos_column(ds)), report([3.1, 4.2])
    r.kept_table                         # clips and hours kept at MOS >= 2.5 / 3.0 / 3.5 / 4.0
    distill_mos.corpus_report.write_html(r, "report.html")

(The module is `corpus_report`, not `report`: a submodule named `report` would replace the `distill_mos.report`
function as soon as it is imported.)

Reads every output of this project: the CLI's CSV / JSON Lines (`distill_mos.columns.COLUMNS`), Ray's Parquet
(`mos`, `mos_error`, `mos_warning`, a `path` or `file` column) and a scored `datasets` folder (`save_to_disk`, with
`mos` / `mos_error` and an `Audio` column). Provenance, when the scores carry it (a sidecar `OUTPUT.provenance.json`
next to the file, or Parquet metadata), is shown as it is.

Figures are matplotlib (Agg backend, no display needed) rendered to inline PNG; tables are pandas.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import mimetypes
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# Clips are "kept" at a threshold when their MOS is >= it: the corpus builders' rule (e.g. DNSMOS >= 3).
THRESHOLDS = (2.5, 3.0, 3.5, 4.0)
CURVE_STEP = 0.05
HISTOGRAM_BINS = np.linspace(1.0, 5.0, 41)  # 0.1 MOS wide over the model's 1..5 range
BANDS = ((1.0, 2.0), (2.0, 3.0), (3.0, 4.0), (4.0, 5.0))  # listening samples: [low, high), the last one closed
EMBED_MAX_SECONDS = 30.0
EMBED_MAX_BYTES = 5_000_000
CANONICAL = ["file", "mos", "duration_s", "error", "warning"]
# The page lists at most this many groups (the worst and the best half each); `CorpusReport.groups` has them all.
MAX_GROUP_ROWS = 200


class ReportError(ValueError):
    """Scores that cannot be read as scores: the message names the source and the problem."""


# --- reading scores -------------------------------------------------------------------------------------------------


@dataclass
class Scores:
    """
    Scores in one shape, whatever they came from. `frame` has one row per clip: `file` (str or None), `mos` (float,
    NaN when not scored), `duration_s` (float seconds, NaN when unknown), `error`, `warning` (str or None), and the
    source's other columns (for `group_by`). Relative `file` paths are relative to `base`.
    """

    frame: pd.DataFrame
    source: str
    base: Path | None = None
    provenance: dict | None = None
    # row index -> encoded audio bytes, for sources that hold the audio themselves (a datasets folder)
    audio_bytes: Callable[[int], bytes | None] | None = field(default=None, repr=False)

    def resolve(self, file: str) -> Path:
        path = Path(file)
        return path if path.is_absolute() or self.base is None else self.base / path


def _first(names: Sequence[str], *candidates: str) -> str | None:
    return next((c for c in candidates if c in names), None)


def _text(values: pd.Series) -> pd.Series:
    """Text cells as an object Series, with empty cells (CSV) and missing values as None (vectorized: 1M rows)."""
    cells = values.to_numpy(dtype=object, na_value=None).copy()
    empty = pd.isna(cells) | (cells == "")
    cells[empty] = None
    return pd.Series(cells, index=values.index, dtype=object)


def normalize(frame: pd.DataFrame, source: str, column: str = "mos") -> pd.DataFrame:
    """Any of our outputs as a DataFrame -> the canonical columns (`CANONICAL`) plus the other columns, unchanged."""
    names = list(frame.columns)
    if column not in names:
        raise ReportError(
            f"{source}: no {column!r} column (found {names or 'no columns'}); expected scores written by distill-mos "
            f"(file,mos,...), score_with_ray (mos, mos_error) or add_mos_column (mos, mos_error)."
        )
    mos = pd.to_numeric(frame[column], errors="coerce")
    suspects = np.flatnonzero((mos.isna() & frame[column].notna()).to_numpy())  # NaN now, something before
    for row in suspects:
        if str(frame[column].iat[row]).strip() not in ("", "nan", "None"):
            raise ReportError(f"{source}: row {row + 1}: {column} is {frame[column].iat[row]!r}, not a number.")
    out = pd.DataFrame(index=frame.index)
    file_column = _first(names, "file", "path", "filename")
    out["file"] = _text(frame[file_column]) if file_column else None
    out["mos"] = mos.astype("float64")
    duration = _first(names, "duration_s", "duration", f"{column}_duration_s")
    out["duration_s"] = (
        pd.to_numeric(frame[duration], errors="coerce").astype("float64") if duration else np.float64("nan")
    )
    for kind in ("error", "warning"):
        name = _first(names, f"{column}_{kind}", kind)
        out[kind] = _text(frame[name]) if name else None
    used = {column, file_column, duration, f"{column}_error", f"{column}_warning", "error", "warning"}
    for name in names:
        if name not in used and name not in out.columns:
            out[name] = frame[name]
    return out.reset_index(drop=True)


def _sidecar_provenance(path: Path) -> dict | None:
    sidecar = path.with_name(path.name + ".provenance.json")
    if not sidecar.is_file():
        return None
    try:
        value = json.loads(sidecar.read_text())
    except (OSError, ValueError) as error:
        raise ReportError(f"{sidecar}: the provenance file is not valid JSON ({error})") from None
    return value if isinstance(value, dict) else {"provenance": value}


def _parquet_provenance(path: Path) -> dict | None:
    import pyarrow.parquet as pq

    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if not files:
        return None
    metadata = pq.read_schema(files[0]).metadata or {}
    for key, value in metadata.items():
        if b"provenance" in key.lower():
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = value.decode(errors="replace")
            return parsed if isinstance(parsed, dict) else {key.decode(errors="replace"): parsed}
    return None


def _read_table(path: Path) -> tuple[pd.DataFrame, dict | None]:
    suffix = path.suffix.lower()
    if path.is_file() and path.stat().st_size == 0:
        return pd.DataFrame(), None
    try:
        if suffix == ".parquet" or (path.is_dir() and any(path.rglob("*.parquet"))):
            return pd.read_parquet(path), _parquet_provenance(path)
        if suffix in (".jsonl", ".json", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False), None
        # keep_default_na=False: a file named "NA" stays a name; only empty cells are missing
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"file": str, "path": str}), None
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: cannot be read as a scores file ({type(error).__name__}: {error})") from None


def _is_datasets_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _audio_columns(dataset) -> list[str]:
    return [name for name, f in (dataset.features or {}).items() if type(f).__name__ == "Audio"]


def _audio_duration(data: bytes | None, path: str | None) -> float:
    """Seconds of an undecoded datasets Audio value, from the header only; NaN if unknown."""
    import soundfile

    try:
        source = io.BytesIO(data) if data else path
        return float(soundfile.info(source).duration) if source else math.nan
    except Exception:  # noqa: BLE001 - an unreadable clip has no known duration; its row still counts
        return math.nan


def from_dataset(dataset, column: str = "mos", source: str = "dataset") -> Scores:
    """
    A scored `datasets.Dataset` (`add_mos_column`'s output) -> `Scores`; durations from the audio headers when there
    is no duration column. The audio is read through Arrow, one clip at a time (never all of it into memory).
    """
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        raise ReportError(f"{source}: a DatasetDict with splits {list(dataset)}; report on one split, e.g. ds['train'].")
    if isinstance(dataset, datasets.IterableDataset):
        raise ReportError(
            f"{source}: a streaming IterableDataset has no length to report on; pass its rows without the audio, "
            f"e.g. report(list(ds.remove_columns('audio')))"
        )
    audio = _audio_columns(dataset)
    plain = dataset.remove_columns(audio).to_pandas() if audio else dataset.to_pandas()
    clips = None
    if audio:
        undecoded = dataset.select_columns([audio[0]]).cast_column(audio[0], datasets.Audio(decode=False))
        clips = undecoded.with_format("arrow")[:].column(audio[0]).combine_chunks()  # struct<bytes, path>
        paths = clips.field("path").to_pylist()
        if "file" not in plain.columns and "path" not in plain.columns:
            plain["file"] = paths
        if not any(c in plain.columns for c in ("duration_s", "duration")):
            data = clips.field("bytes")
            plain["duration_s"] = [_audio_duration(data[i].as_py(), paths[i]) for i in range(len(paths))]
    frame = normalize(plain, source, column)

    def audio_bytes(row: int) -> bytes | None:
        return clips.field("bytes")[row].as_py() if clips is not None else None

    return Scores(frame, source, audio_bytes=audio_bytes)


def load_scores(source, audio_root: str | os.PathLike | None = None, column: str = "mos") -> Scores:
    """
    `source`: a scores file (.csv, .jsonl, .parquet), a Ray Parquet folder, a `datasets` save_to_disk folder, a
    `datasets.Dataset`, a pandas DataFrame, a sequence of `FileScore`s, or a plain sequence of MOS values (None for
    a failed clip). Relative file paths resolve against `audio_root`, else the scores file's folder.
    """
    root = Path(audio_root) if audio_root is not None else None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ReportError(f"{path}: no such file or folder")
        if _is_datasets_folder(path):
            import datasets

            try:
                loaded = datasets.load_from_disk(str(path))
            except Exception as error:  # noqa: BLE001 - one line naming the folder, not the library's traceback
                raise ReportError(f"{path}: cannot be loaded as a datasets folder ({error})") from None
            scores = from_dataset(loaded, column, str(path))
            scores.base = root or path
            scores.provenance = _sidecar_provenance(path)
            return scores
        if path.is_dir() and not any(path.rglob("*.parquet")):
            raise ReportError(f"{path}: a folder without Parquet files or a datasets save; give a scores file")
        frame, provenance = _read_table(path)
        if frame.empty and len(frame.columns) == 0:  # a 0-byte file: no rows, so an empty report, not an error
            frame = pd.DataFrame({c: pd.Series(dtype=object) for c in CANONICAL})
        return Scores(
            normalize(frame, str(path), column), str(path), root or path.parent,
            provenance or _sidecar_provenance(path),
        )
    if isinstance(source, pd.DataFrame):
        return Scores(normalize(source, "DataFrame", column), "DataFrame", root)
    if type(source).__module__.startswith("datasets"):
        scores = from_dataset(source, column)
        scores.base = root
        return scores
    values = list(source)
    if values and hasattr(values[0], "mos") and hasattr(values[0], "path"):  # FileScore
        frame = pd.DataFrame({
            "file": [v.path for v in values], "mos": [v.mos for v in values],
            "duration_s": [v.duration for v in values], "error": [v.error for v in values],
            "warning": [v.warning for v in values],
        })
        return Scores(normalize(frame, "scores", "mos"), "scores", root)
    if values and isinstance(values[0], Mapping):
        return Scores(normalize(pd.DataFrame(values), "rows", column), "rows", root)
    mos = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
    return Scores(normalize(pd.DataFrame({"mos": mos}), "scores", "mos"), "scores", root)


# --- the figures as data ---------------------------------------------------------------------------------------------


@dataclass
class CorpusReport:
    """
    What `report()` finds. MOS on the model's 1..5 scale, durations in seconds, hours in hours.

    histogram: bin_start, bin_end, clips (0.1 MOS bins over 1..5; a score outside counts in the edge bin).
    kept_curve: threshold (1.0..5.0 by 0.05), clips_kept, share_clips_kept, hours_kept, share_hours_kept
        (kept: MOS >= threshold; shares of the scored clips / scored hours; hours NaN without durations).
    kept_table: kept_curve's rows at `THRESHOLDS`.
    groups: group, clips, scored, errors, hours, mean_mos, share_under (MOS < group_threshold), sorted worst mean
        first; None without `group_by`.
    samples: kind ("1.0-2.0", ..., "worst", "best"), row, file, mos, duration_s.
    errors / warnings: reason, clips, example_file, example (the first full message).
    """

    source: str
    rows: int
    scored: int
    failed: int
    warned: int
    has_durations: bool
    hours_scored: float
    mean_mos: float
    median_mos: float
    histogram: pd.DataFrame
    kept_curve: pd.DataFrame
    kept_table: pd.DataFrame
    groups: pd.DataFrame | None
    group_by: str | None
    group_threshold: float
    samples: pd.DataFrame
    errors: pd.DataFrame
    warnings: pd.DataFrame
    provenance: dict | None
    notes: list[str]
    scores: Scores = field(repr=False)


def reason_of(message: str) -> str:
    """A message without its particulars (file names, numbers, library detail): what errors are counted by."""
    text = re.split(r" \(|; ", message, maxsplit=1)[0]
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text.strip().rstrip(".:") or message


def _by_reason(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    columns = ["reason", "clips", "example_file", "example"]
    rows = frame[frame[kind].notna()]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    messages = rows[kind]
    # count each distinct message once through reason_of (1M rows often hold few distinct messages)
    reasons = messages.map({m: reason_of(m) for m in messages.unique()})
    table = (
        pd.DataFrame({"reason": reasons, "example_file": rows["file"], "example": messages})
        .groupby("reason", sort=False)
        .agg(clips=("example", "size"), example_file=("example_file", "first"), example=("example", "first"))
        .reset_index()
        .sort_values(["clips", "reason"], ascending=[False, True], kind="stable")
    )
    return table[columns].reset_index(drop=True)


def kept_at(mos: np.ndarray, duration_s: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """Clips and hours with MOS >= each threshold (`mos`, `duration_s`: the scored clips; NaN durations count 0)."""
    order = np.argsort(mos, kind="stable")
    sorted_mos = mos[order]
    hours = np.nan_to_num(duration_s[order], nan=0.0) / 3600.0
    below_hours = np.concatenate([[0.0], np.cumsum(hours)])
    below = np.searchsorted(sorted_mos, thresholds, side="left")  # clips with MOS < threshold
    n, total_hours = len(mos), below_hours[-1]
    has_durations = bool(np.isfinite(duration_s).any())
    kept_hours = total_hours - below_hours[below] if has_durations else np.full(len(thresholds), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame({
            "threshold": thresholds,
            "clips_kept": n - below,
            "share_clips_kept": (n - below) / n if n else np.full(len(thresholds), np.nan),
            "hours_kept": kept_hours,
            "share_hours_kept": kept_hours / total_hours if has_durations and total_hours > 0 else np.nan,
        })


def _folder_of(files: pd.Series) -> pd.Series:
    """Each file's folder, relative to the folder all files share (so groups read 'speaker1', not '/data/.../speaker1')."""
    # plain str.rpartition over the values: several times faster than pandas' string accessor on 1M paths
    codes, unique = pd.factorize(
        pd.Series([f.replace("\\", "/").rpartition("/")[0] if isinstance(f, str) else "" for f in files], dtype=object)
    )
    named = [f for f in unique if f]
    common = os.path.commonpath(named) if len(named) > 1 else ""
    shown = np.array([(os.path.relpath(f, common) if common else f) if f else "." for f in unique], dtype=object)
    return pd.Series(shown[codes], index=files.index, dtype=object)


def _groups(frame: pd.DataFrame, group_by: str, threshold: float, has_durations: bool) -> pd.DataFrame:
    if group_by == "folder":
        if len(frame) and frame["file"].isna().all():
            raise ReportError("--group-by folder needs file paths, and these scores have none")
        keys = _folder_of(frame["file"])
    elif group_by in frame.columns:
        keys = frame[group_by].astype(object).where(frame[group_by].notna(), "(none)").astype(str)
    else:
        available = [c for c in frame.columns if c not in ("mos", "error", "warning", "duration_s")]
        raise ReportError(f"--group-by {group_by!r}: no such column; use folder or one of {available}")
    scored = frame["mos"].notna()
    data = pd.DataFrame({
        "group": keys,
        "scored": scored,
        "errors": frame["error"].notna(),
        "mos": frame["mos"],
        "hours": frame["duration_s"].where(scored) / 3600.0,
        "under": (frame["mos"] < threshold).where(scored),
    })
    table = data.groupby("group", sort=False).agg(
        clips=("scored", "size"), scored=("scored", "sum"), errors=("errors", "sum"),
        hours=("hours", "sum"), mean_mos=("mos", "mean"), share_under=("under", "mean"),
    ).reset_index()
    if not has_durations:
        table["hours"] = np.nan
    return table.sort_values(["mean_mos", "group"], kind="stable", na_position="first").reset_index(drop=True)


def _samples(frame: pd.DataFrame, per_band: int, extremes: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    mos = frame["mos"].to_numpy()
    scored = np.flatnonzero(np.isfinite(mos))
    picks: list[tuple[str, np.ndarray]] = []
    for low, high in BANDS:
        in_band = scored[(mos[scored] >= low) & ((mos[scored] < high) | ((high == BANDS[-1][1]) & (mos[scored] <= high)))]
        chosen = rng.choice(in_band, size=min(per_band, len(in_band)), replace=False) if len(in_band) else in_band
        picks.append((f"{low:.1f}-{high:.1f}", chosen[np.argsort(mos[chosen], kind="stable")]))
    order = scored[np.argsort(mos[scored], kind="stable")]
    picks += [("worst", order[:extremes]), ("best", order[::-1][:extremes])]
    rows = [(kind, int(i)) for kind, chosen in picks for i in chosen]
    return pd.DataFrame({
        "kind": [k for k, _ in rows],
        "row": [i for _, i in rows],
        "file": [frame["file"].iat[i] for _, i in rows],
        "mos": [float(mos[i]) for _, i in rows],
        "duration_s": [float(frame["duration_s"].iat[i]) for _, i in rows],
    })


def build_report(
    scores: Scores,
    group_by: str | None = None,
    group_threshold: float = 3.0,
    samples_per_band: int = 3,
    extremes: int = 5,
    seed: int = 0,
) -> CorpusReport:
    """The report's figures from `scores` (see `CorpusReport`). `seed` picks the listening samples reproducibly."""
    frame = scores.frame
    ok = frame["mos"].notna().to_numpy()
    mos = frame["mos"].to_numpy()[ok]
    duration = frame["duration_s"].to_numpy(dtype="float64")[ok]
    has_durations = bool(np.isfinite(duration).any())
    notes = []
    if len(frame) == 0:
        notes.append("The scores hold no rows: nothing to report.")
    elif not ok.any():
        notes.append(f"No clip was scored: all {len(frame)} rows are errors (see Errors).")
    if len(mos) and not has_durations:
        notes.append("The scores carry no durations: hours are not shown (clips only).")
    elif len(mos) and not np.isfinite(duration).all():
        notes.append(f"{int((~np.isfinite(duration)).sum())} scored clips have no duration: they count 0 hours.")
    counts, _ = np.histogram(np.clip(mos, HISTOGRAM_BINS[0], HISTOGRAM_BINS[-1]), bins=HISTOGRAM_BINS)
    grid = np.round(np.arange(1.0, 5.0 + CURVE_STEP / 2, CURVE_STEP), 2)
    curve = kept_at(mos, duration, grid)
    return CorpusReport(
        source=scores.source,
        rows=len(frame),
        scored=int(ok.sum()),
        failed=int(frame["error"].notna().sum()),
        warned=int(frame["warning"].notna().sum()),
        has_durations=has_durations,
        hours_scored=float(np.nansum(duration) / 3600.0) if has_durations else math.nan,
        mean_mos=float(mos.mean()) if len(mos) else math.nan,
        median_mos=float(np.median(mos)) if len(mos) else math.nan,
        histogram=pd.DataFrame({"bin_start": HISTOGRAM_BINS[:-1], "bin_end": HISTOGRAM_BINS[1:], "clips": counts}),
        kept_curve=curve,
        kept_table=kept_at(mos, duration, np.array(THRESHOLDS)),
        groups=_groups(frame, group_by, group_threshold, has_durations) if group_by else None,
        group_by=group_by,
        group_threshold=group_threshold,
        samples=_samples(frame, samples_per_band, extremes, seed),
        errors=_by_reason(frame, "error"),
        warnings=_by_reason(frame, "warning"),
        provenance=scores.provenance,
        notes=notes,
        scores=scores,
    )


def report(
    ds_or_scores,
    group_by: str | None = None,
    group_threshold: float = 3.0,
    audio_root: str | os.PathLike | None = None,
    column: str = "mos",
    samples_per_band: int = 3,
    seed: int = 0,
) -> CorpusReport:
    """
    The corpus report of `ds_or_scores` as data: a scored `datasets.Dataset` (`add_mos_column`), a scores file or
    folder, a DataFrame, `FileScore`s or plain MOS values (see `load_scores`). `group_by`: "folder" or a column
    (e.g. "speaker"). Write it as HTML with `write_html(report, path)`.
    """
    return build_report(
        load_scores(ds_or_scores, audio_root, column), group_by, group_threshold, samples_per_band, seed=seed
    )


# --- figures -----------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display: files and data URIs only
    import matplotlib.pyplot as plt

    return plt


def histogram_figure(source, title: str = "MOS distribution"):
    """
    A matplotlib Figure of the MOS histogram, with the `THRESHOLDS` marked. `source`: a `CorpusReport` or anything
    `report()` takes (e.g. the batch's MOS list in the Space, None for a failed clip).
    """
    r = source if isinstance(source, CorpusReport) else report(source)
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7.5, 3.2), dpi=100, layout="constrained")
    axes.stairs(r.histogram["clips"], HISTOGRAM_BINS, fill=True, color="#4c72b0", alpha=0.85)
    for t in THRESHOLDS:
        axes.axvline(t, color="#c44e52", lw=0.8, ls="--")
    axes.set(xlim=(1, 5), xlabel="predicted MOS", ylabel="clips",
             title=f"{title} ({r.scored:,} clips, mean {r.mean_mos:.2f})" if r.scored else f"{title} (no scores)")
    axes.grid(axis="y", alpha=0.3)
    return figure


def kept_figure(r: CorpusReport):
    """Hours (or clips, without durations) kept at MOS >= threshold, as a curve, with `THRESHOLDS` marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7.5, 3.2), dpi=100, layout="constrained")
    curve = r.kept_curve
    what = "hours_kept" if r.has_durations else "clips_kept"
    axes.plot(curve["threshold"], curve[what], color="#4c72b0", lw=2)
    for t in THRESHOLDS:
        axes.axvline(t, color="#c44e52", lw=0.8, ls="--")
    axes.set(xlim=(1, 5), ylim=(0, None), xlabel="threshold (keep MOS >= threshold)",
             ylabel="hours kept" if r.has_durations else "clips kept", title="What a threshold keeps")
    share = axes.twinx()
    share.plot(curve["threshold"], 100 * curve["share_clips_kept"], color="#55a868", lw=1, ls=":")
    share.set(ylim=(0, 105), ylabel="% of scored clips kept (dotted)")
    axes.grid(alpha=0.3)
    return figure


def png_data_uri(figure) -> str:
    """A matplotlib Figure -> `data:image/png;base64,...` (the figure is closed)."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# --- HTML ------------------------------------------------------------------------------------------------------


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}th,td{padding:.25em .7em;border-bottom:1px solid #eee;
text-align:right}th{background:#f4f4f4}td.text,th.text{text-align:left}.cards{display:flex;gap:1em;flex-wrap:wrap}
.card{background:#f6f8fa;border-radius:6px;padding:.6em 1em}.card b{display:block;font-size:1.4em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em}img{max-width:100%}audio{height:2em}
.missing{color:#a33}code{font-size:.85em}
"""


def _number(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return f"{value:,.{digits if abs(value) >= 1 or value == 0 else 3}f}"  # 0.012 hours, not 0.01


def _table(frame: pd.DataFrame, formats: Mapping[str, Callable] | None = None, text: Sequence[str] = ()) -> str:
    formats = formats or {}
    head = "".join(f'<th class="{"text" if c in text else ""}">{html.escape(str(c))}</th>' for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for name, value in zip(frame.columns, row):
            shown = formats[name](value) if name in formats else (
                _number(value) if isinstance(value, (float, int, np.number)) else html.escape("" if value is None else str(value))
            )
            cells.append(f'<td class="{"text" if name in text else ""}">{shown}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _percent(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f}%"


def _audio_src(r: CorpusReport, row: int, file: str | None, html_dir: Path, embed: bool, duration: float) -> str | None:
    """The <audio> src of a sample: a data URI (embed, short clips) or a link relative to the HTML file; None if absent."""
    scores = r.scores
    short = not np.isfinite(duration) or duration <= EMBED_MAX_SECONDS
    data = scores.audio_bytes(row) if scores.audio_bytes else None
    path = scores.resolve(file) if file else None
    if data is None and path is not None and path.is_file() and embed and short and path.stat().st_size <= EMBED_MAX_BYTES:
        data = path.read_bytes()
    if data is not None and (embed or path is None or not path.is_file()) and len(data) <= EMBED_MAX_BYTES:
        mime = mimetypes.guess_type(file or "clip.wav")[0] or "audio/wav"
        return f"data:{mime};base64," + base64.b64encode(data).decode()
    if path is not None and path.is_file():
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(html_dir))  # not resolve(): a symlinked folder stays as written
        return urllib.parse.quote(Path(relative).as_posix())
    return None


def _samples_html(r: CorpusReport, html_dir: Path, embed: bool) -> str:
    if r.samples.empty:
        return "<p>No scored clips to listen to.</p>"
    parts = []
    for kind, rows in r.samples.groupby("kind", sort=False):
        label = {"worst": "Worst clips", "best": "Best clips"}.get(kind, f"MOS {kind}")
        items = []
        for s in rows.itertuples(index=False):
            src = _audio_src(r, s.row, s.file, html_dir, embed, s.duration_s)
            player = (
                f'<audio controls preload="metadata" src="{html.escape(src)}"></audio>' if src
                else '<span class="missing">audio not found</span>'
            )
            items.append(
                f'<tr><td>{s.mos:.2f}</td><td class="text">{player}</td>'
                f'<td class="text"><code>{html.escape(str(s.file or f"row {s.row + 1}"))}</code></td></tr>'
            )
        parts.append(f"<h3>{html.escape(label)}</h3><table><tbody>{''.join(items)}</tbody></table>")
    return "".join(parts)


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        return [item for k, v in value.items() for item in _flatten(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), json.dumps(value) if not isinstance(value, str) else value)]


def to_html(r: CorpusReport, html_path: str | os.PathLike = "report.html", embed_audio: bool = False) -> str:
    """The report as one HTML page (figures inline as PNG; audio linked relative to `html_path`, or embedded)."""
    html_dir = Path(html_path).parent
    e = html.escape
    cards = [("clips", _number(r.rows)), ("scored", _number(r.scored)), ("errors", _number(r.failed)),
             ("warnings", _number(r.warned)), ("hours scored", _number(r.hours_scored)),
             ("mean MOS", _number(r.mean_mos)), ("median MOS", _number(r.median_mos))]
    out = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Distill-MOS report: {e(Path(r.source).name)}"
        f"</title><style>{_CSS}</style></head><body>",
        f"<h1>Distill-MOS corpus report</h1><p>Scores: <code>{e(r.source)}</code></p>",
        "<div class='cards'>" + "".join(f"<div class='card'>{e(k)}<b>{v}</b></div>" for k, v in cards) + "</div>",
        *[f"<p class='note'>{e(note)}</p>" for note in r.notes],
    ]
    if r.scored:
        kept = r.kept_table.assign(
            share_clips_kept=r.kept_table["share_clips_kept"].map(_percent),
            share_hours_kept=r.kept_table["share_hours_kept"].map(_percent),
        ).rename(columns={"threshold": "MOS >=", "clips_kept": "clips kept", "share_clips_kept": "% clips",
                          "hours_kept": "hours kept", "share_hours_kept": "% hours"})
        out += [
            "<h2>MOS distribution</h2>",
            f"<img alt='MOS histogram' src='{png_data_uri(histogram_figure(r))}'>",
            "<h2>What a threshold keeps</h2>",
            f"<img alt='hours kept against the threshold' src='{png_data_uri(kept_figure(r))}'>",
            "<p>Kept: the scored clips with MOS >= the threshold; shares are of the scored clips and hours.</p>",
            _table(kept, {"% clips": str, "% hours": str}),
        ]
    if r.groups is not None:
        groups = r.groups.assign(share_under=r.groups["share_under"].map(_percent)).rename(
            columns={"mean_mos": "mean MOS", "share_under": f"% under {r.group_threshold:g}"})
        shown = groups
        if len(groups) > MAX_GROUP_ROWS:
            half = MAX_GROUP_ROWS // 2
            shown = pd.concat([groups.head(half), groups.tail(half)])
        out += [f"<h2>By {e(r.group_by)} (worst mean first)</h2>",
                _table(shown, {f"% under {r.group_threshold:g}": str}, text=["group"])]
        if len(shown) < len(groups):
            out.append(f"<p>The {MAX_GROUP_ROWS // 2} worst and {MAX_GROUP_ROWS // 2} best of {len(groups):,} groups; "
                       "all are in <code>report(...).groups</code>.</p>")
    out += ["<h2>Listening samples</h2>", _samples_html(r, html_dir, embed_audio)]
    for title, frame in (("Errors", r.errors), ("Warnings", r.warnings)):
        out.append(f"<h2>{title} by reason</h2>")
        out.append(_table(frame, text=["reason", "example_file", "example"]) if len(frame) else f"<p>No {title.lower()}.</p>")
    if r.provenance:
        out += ["<h2>Provenance of the scores</h2>",
                _table(pd.DataFrame(_flatten(r.provenance), columns=["what", "value"]), text=["what", "value"])]
    out.append("</body></html>")
    return "\n".join(out)


def write_html(r: CorpusReport, path: str | os.PathLike, embed_audio: bool = False) -> Path:
    """Writes `to_html(r)` to `path` (audio links relative to it). Returns the path."""
    path = Path(path)
    path.write_text(to_html(r, path, embed_audio), encoding="utf-8")
    return path


__all__ = [
    "CorpusReport", "ReportError", "Scores", "THRESHOLDS", "build_report", "histogram_figure", "kept_at",
    "kept_figure", "load_scores", "png_data_uri", "reason_of", "report", "to_html", "write_html",
]
