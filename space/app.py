"""
Distill-MOS Gradio Space: score the speech quality (MOS 1..5) of uploaded or recorded audio: one clip (with its
per-window curve), several files (a table and a CSV) or two clips compared. API: /predict, /compare, /score_many.

Run from the repository checkout:   python space/app.py          (http://127.0.0.1:7860)
Import without launching:          from app import build_demo; demo = build_demo(scorer)
Build the Space repository:         python space/build_space.py out/space   (layout: space/README.md)

Decoding, resampling and scoring go through the `distill_mos` library (`DistillMOSScorer.prepare_file` and
`score_prepared`, the same path as the `distill-mos` command line tool); this file only adds the page, the limits
and the messages. Settings (environment variables, all optional):

    DISTILL_MOS_SPACE_MODEL   model folder or Hub id (else $DISTILL_MOS_MODEL, else this checkout, else the Hub)
    DISTILL_MOS_DEVICE        cpu, cuda or auto (default auto)
    DISTILL_MOS_MAX_SECONDS   longest clip scored, in seconds (default 600)
    DISTILL_MOS_MAX_UPLOAD_MB largest file accepted, in MB (default 50)
    DISTILL_MOS_MAX_FILES     files per request on the "Several files" tab (default 20)
    DISTILL_MOS_CONCURRENCY   requests scored at the same time (default 2)
    DISTILL_MOS_QUEUE_SIZE    requests allowed to wait in the queue (default 32)
    DISTILL_MOS_WINDOW_HOP    seconds between windows on long clips (default: exact, 1 s, as the library)
    DISTILL_MOS_DTYPE         float32 (default), bfloat16, float16 or auto: the precision the model scores in
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT   where to listen (default 127.0.0.1:7860; Spaces sets 0.0.0.0)
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path

SPACE_DIR = Path(__file__).resolve().parent
# From the checkout, the library (distill_mos/ and the model's *_distillmos.py modules) sits one folder up.
_REPO_ROOT = SPACE_DIR.parent
if (_REPO_ROOT / "distill_mos" / "__init__.py").is_file() and str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from configuration_distillmos import DistillMOSConfig  # noqa: E402
from distill_mos import DistillMOSScorer, FileScore  # noqa: E402
from distill_mos.results import Item  # noqa: E402
from distill_mos.audio import TOO_LONG_PREFIX  # noqa: E402
from distill_mos.columns import DTYPE_NAMES  # noqa: E402

logger = logging.getLogger("distill_mos.space")

EXAMPLES_DIR = SPACE_DIR / "examples"
WINDOW_SECONDS = DistillMOSConfig().window_seconds  # 7.68 s, from the model's configuration
ACR_LABELS = ("bad", "poor", "fair", "good", "excellent")
MODEL_ID = "distill-mos/distill-mos-v7"
TABLE_COLUMNS = ["file", "MOS", "quality", "duration (s)", "error"]
DTYPES = (*DTYPE_NAMES, "auto")  # what DistillMOSScorer.from_pretrained(dtype=...) takes
CSV_COLUMNS = ["file", "mos", "quality", "duration_s", "sampling_rate", "channels", "error", "warning"]


# --- settings -----------------------------------------------------------------------------------------------------


def _env_number(name: str, default: float, kind=float, minimum: float = 0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if value <= minimum:
        raise ValueError(f"{name} must be more than {minimum}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Limits:
    """What one request may ask of a shared Space."""

    max_seconds: float = 600.0
    max_upload_mb: float = 50.0
    max_files: int = 20
    concurrency: int = 2
    queue_size: int = 32

    @classmethod
    def from_env(cls) -> "Limits":
        return cls(
            max_seconds=_env_number("DISTILL_MOS_MAX_SECONDS", cls.max_seconds),
            max_upload_mb=_env_number("DISTILL_MOS_MAX_UPLOAD_MB", cls.max_upload_mb),
            max_files=int(_env_number("DISTILL_MOS_MAX_FILES", cls.max_files, int)),
            concurrency=int(_env_number("DISTILL_MOS_CONCURRENCY", cls.concurrency, int)),
            queue_size=int(_env_number("DISTILL_MOS_QUEUE_SIZE", cls.queue_size, int)),
        )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    def describe(self) -> str:
        return (
            f"up to {_format_seconds(self.max_seconds)} of audio and {self.max_upload_mb:g} MB per file, "
            f"{self.max_files} files per request, {self.concurrency} request(s) scored at a time"
        )


def scorer_kwargs() -> dict:
    """`DistillMOSScorer.from_pretrained` keyword arguments from the environment (see the module docstring)."""
    hop = os.environ.get("DISTILL_MOS_WINDOW_HOP", "").strip()
    kwargs = {
        "device": os.environ.get("DISTILL_MOS_DEVICE", "auto"),
        "window_hop": float(hop) if hop else None,
    }
    dtype = os.environ.get("DISTILL_MOS_DTYPE", "").strip().lower()
    if dtype:  # passed only when set: the library's default precision is float32
        if dtype not in DTYPES:
            raise ValueError(f"DISTILL_MOS_DTYPE must be one of {', '.join(DTYPES)}, got {dtype!r}")
        kwargs["dtype"] = dtype
    return kwargs


def load_scorer() -> DistillMOSScorer:
    """The model from $DISTILL_MOS_SPACE_MODEL, else the library's default (env, checkout, installed copy, Hub)."""
    return DistillMOSScorer.from_pretrained(os.environ.get("DISTILL_MOS_SPACE_MODEL") or None, **scorer_kwargs())


# --- formatting ---------------------------------------------------------------------------------------------------


def acr_label(mos: float) -> str:
    """The ACR category nearest to a MOS: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent."""
    return ACR_LABELS[min(4, max(0, math.floor(mos + 0.5) - 1))]


def _format_seconds(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _channels_text(channels: int | None) -> str:
    if channels is None:
        return "?"
    return "1 channel (mono)" if channels == 1 else f"{channels} channels (the first is scored)"


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Example:
    path: Path
    human_mos: float
    condition: str


def load_examples(folder: Path = EXAMPLES_DIR) -> list[Example]:
    """The bundled GenSpeech clips with their human listening-test MOS (examples/labels.csv)."""
    labels = folder / "labels.csv"
    if not labels.is_file():
        return []
    with labels.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        Example(folder / row["file"], float(row["human_mos"]), row["condition"])
        for row in rows
        if (folder / row["file"]).is_file()
    ]


# --- scoring ------------------------------------------------------------------------------------------------------


def probe_duration(path: str | Path) -> float | None:
    """
    Duration from the file header, without decoding (None when the header does not say, e.g. a FLAC written to a
    pipe, which libsndfile reports as 2**63 - 1 frames: "5.8e14 s"). The library's probe, so that the Space and the
    command line tool agree.
    """
    from distill_mos.audio import probe_duration as header_duration

    return header_duration(path)


class SpaceScorer:
    """The library's scorer behind the Space's limits; every outcome is a `FileScore`, nothing raises."""

    def __init__(self, scorer: DistillMOSScorer, limits: Limits, examples: list[Example] | None = None):
        self.scorer = scorer
        self.limits = limits
        self.examples = examples or []
        self._human_mos = {}
        for example in self.examples:
            self._human_mos[(example.path.stat().st_size, _sha256(example.path))] = example

    def example_for(self, path: str | Path) -> Example | None:
        """The bundled example whose bytes this file has (so its human MOS can be shown), else None."""
        try:
            size = os.path.getsize(path)
            if not any(size == key[0] for key in self._human_mos):
                return None
            return self._human_mos.get((size, _sha256(path)))
        except OSError:
            return None

    def check_limits(self, path: str | Path) -> str | None:
        """A readable reason why this file is refused before decoding, or None."""
        try:
            size = os.path.getsize(path)
        except OSError:
            return None  # missing file: the decoder's own message says so
        if size > self.limits.max_upload_bytes:
            return (
                f"file is too large ({size / 1e6:.1f} MB); this Space accepts files up to "
                f"{self.limits.max_upload_mb:g} MB"
            )
        duration = probe_duration(path)
        if duration is not None and duration > self.limits.max_seconds:
            return self._too_long(duration)
        return None

    def _too_long(self, duration: float | None) -> str:
        """The refusal of audio over the limit; `duration` None when the decoder stopped at the limit."""
        length = f"{duration:.1f} s" if duration is not None else f"over {_format_seconds(self.limits.max_seconds)}"
        return (
            f"audio is too long ({length}); this Space scores clips up to "
            f"{_format_seconds(self.limits.max_seconds)}. Cut it, or use the distill-mos command line tool, "
            "which has no limit"
        )

    def score_paths(self, paths: list[str]) -> list[FileScore]:
        """
        Scores files in order through the library's decode and scoring path, within the limits. Warnings (silent,
        very short, truncated file) are the library's, worded as the command line tool words them.
        """
        items = [Item.failed(path, refused) if (refused := self.check_limits(path)) else Item.file(path) for path in paths]
        results = list(self.scorer.score_items(items, max_seconds=self.limits.max_seconds))
        for path, result in zip(paths, results):
            if result.error_type:  # the network failed: the type only, internals stay in the server's log
                logger.warning("%s", result.error)
                result.error = f"scoring failed ({result.error_type}); please try again or a shorter clip"
            elif result.error:  # the decoder names the server's temporary path: show the file's own name instead
                result.error = result.error.replace(str(path), Path(path).name)
                if result.error.startswith(TOO_LONG_PREFIX):  # stopped while decoding, in our words
                    result.error = self._too_long(None)
        return results

    def score_path(self, path: str) -> FileScore:
        return self.score_paths([path])[0]


# --- handlers (the page's and the API's functions) ----------------------------------------------------------------


def _is_silent(result: FileScore) -> bool:
    return bool(result.warning and "silent" in result.warning)


def result_markdown(result: FileScore, example: Example | None = None) -> str:
    """The one-clip result: MOS and ACR label, or a readable error; then what was read."""
    if result.error:
        return f"### ⚠️ Could not score this file\n\n{_sentence(result.error)}"
    lines = []
    if _is_silent(result):
        lines += [
            "### ⚠️ No meaningful score: the audio is silent",
            "",
            "Every sample is zero, so there is no speech to rate. "
            f"(The model still outputs {result.mos:.2f} for it, which says nothing about quality.)",
        ]
    else:
        lines.append(f"### Predicted MOS {result.mos:.2f} / 5 — {acr_label(result.mos)}")
        if example is not None:
            lines += ["", f"Human listening-test MOS of this GenSpeech clip ({example.condition}): "
                          f"**{example.human_mos:.2f}**"]
        if result.warning:
            lines += ["", f"⚠️ {_sentence(result.warning)}"]
    windows = len(result.window_scores)
    lines += [
        "",
        f"Read: {result.duration:.2f} s · {result.sampling_rate} Hz · {_channels_text(result.channels)}"
        f"{'' if result.sampling_rate == 16000 else ' · resampled to 16 kHz'}"
        f" · {windows} window{'s' if windows != 1 else ''} of {WINDOW_SECONDS} s",
    ]
    return "\n".join(lines)


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", ".)")) else text + "."


def window_centres(result: FileScore) -> list[float]:
    """Centre time (seconds) of each scored window; a clip shorter than a window has its window's centre mid-clip."""
    width = min(WINDOW_SECONDS, result.duration or WINDOW_SECONDS)
    return [start + width / 2 for start in result.window_start_times]


# --- the per-window plot ------------------------------------------------------------------------------------------
# Drawn here as inline SVG (a gr.HTML value) rather than gr.LinePlot: the page shows exactly the points of the
# response it received (gr.LinePlot redrew the previous response's data when its value and x_lim changed together),
# and the time axis gets at most PLOT_MAX_TICKS labels however long the clip.

PLOT_WIDTH, PLOT_HEIGHT = 640, 290
PLOT_MARGIN = {"left": 46, "right": 18, "top": 34, "bottom": 46}
PLOT_MAX_TICKS = 8
PLOT_COLORS = ("#4f46e5", "#ea580c")  # clip A / the only clip: indigo; clip B: orange


@dataclass
class Series:
    """One curve of the plot: a label and its points, time (s) and MOS."""

    label: str
    times: list[float]
    scores: list[float]
    color: str | None = None  # default: PLOT_COLORS by position


def nice_step(span: float, max_ticks: int = PLOT_MAX_TICKS) -> float:
    """The smallest of 1, 2, 5 x 10^k seconds that puts at most `max_ticks` intervals on `span` seconds."""
    if span <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(span / max_ticks))
    for multiple in (1, 2, 5, 10):
        if span / (multiple * magnitude) <= max_ticks:
            return multiple * magnitude
    return 10 * magnitude


def _tick_label(value: float) -> str:
    return f"{value:.10g}"


def window_plot_svg(series: list[Series], duration: float, title: str = "Score of each window") -> str:
    """
    The per-window scores as an SVG line plot: x is time in seconds (0 .. `duration`, window centres), y is MOS 1..5.
    Each point is a `<circle class="mos-point" data-series=...>` with a tooltip; axis labels are `<text>` in
    `<g class="x-tick">` / `<g class="y-tick">`, so the figure can be read back (the browser test does).
    """
    legend = len(series) > 1
    left, top = PLOT_MARGIN["left"], PLOT_MARGIN["top"] + (18 if legend else 0)  # the legend sits under the title
    width = PLOT_WIDTH - left - PLOT_MARGIN["right"]
    height = PLOT_HEIGHT - PLOT_MARGIN["top"] - PLOT_MARGIN["bottom"]
    total_height = top + height + PLOT_MARGIN["bottom"]
    x_max = max(duration, max((t for s in series for t in s.times), default=0.0), 1e-6)

    def x(t: float) -> float:
        return left + width * t / x_max

    def y(mos: float) -> float:
        return top + height * (5 - min(5.0, max(1.0, mos))) / 4

    parts = [
        f'<svg class="mos-plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {PLOT_WIDTH} {total_height}" '
        f'width="100%" role="img" aria-label="{escape(title)}" style="max-width:{PLOT_WIDTH}px;font-family:inherit">',
        f'<text x="{left + width / 2:.2f}" y="18" text-anchor="middle" font-size="14" fill="currentColor">'
        f"{escape(title)}</text>",
    ]
    for mos in range(1, 6):
        parts.append(
            f'<g class="y-tick"><line x1="{left}" x2="{left + width}" y1="{y(mos):.2f}" y2="{y(mos):.2f}" '
            f'stroke="currentColor" stroke-opacity="0.15"/><text x="{left - 8}" y="{y(mos):.2f}" dy="0.32em" '
            f'text-anchor="end" font-size="12" fill="currentColor">{mos}</text></g>'
        )
    step = nice_step(x_max)
    for k in range(int(math.floor(x_max / step + 1e-9)) + 1):
        t = k * step
        parts.append(
            f'<g class="x-tick"><line x1="{x(t):.2f}" x2="{x(t):.2f}" y1="{top + height}" y2="{top + height + 5}" '
            f'stroke="currentColor" stroke-opacity="0.6"/><text x="{x(t):.2f}" y="{top + height + 18}" '
            f'text-anchor="middle" font-size="12" fill="currentColor">{_tick_label(t)}</text></g>'
        )
    parts += [
        f'<line x1="{left}" x2="{left + width}" y1="{top + height}" y2="{top + height}" stroke="currentColor" '
        'stroke-opacity="0.6"/>',
        f'<text x="{left + width / 2:.2f}" y="{total_height - 6}" text-anchor="middle" font-size="12" '
        'fill="currentColor">time (s), window centre</text>',
        f'<text transform="translate(13 {top + height / 2:.2f}) rotate(-90)" text-anchor="middle" font-size="12" '
        'fill="currentColor">MOS</text>',
    ]
    for index, s in enumerate(series):
        color = s.color or PLOT_COLORS[index % len(PLOT_COLORS)]
        label = escape(s.label, quote=True)
        points = " ".join(f"{x(t):.2f},{y(m):.2f}" for t, m in zip(s.times, s.scores))
        parts.append(
            f'<polyline class="mos-line" data-series="{label}" points="{points}" fill="none" stroke="{color}" '
            'stroke-width="2"/>'
        )
        for t, m in zip(s.times, s.scores):
            parts.append(
                f'<circle class="mos-point" data-series="{label}" cx="{x(t):.2f}" cy="{y(m):.2f}" r="3.5" '
                f'fill="{color}"><title>{label}: {t:.2f} s, MOS {m:.2f}</title></circle>'
            )
    if legend:  # under the title, one entry per series
        for index, s in enumerate(series):
            lx = left + width / 2 - 85 * len(series) + 170 * index
            color = s.color or PLOT_COLORS[index % len(PLOT_COLORS)]
            parts.append(
                f'<g class="legend"><line x1="{lx:.2f}" x2="{lx + 18:.2f}" y1="38" y2="38" stroke="{color}" '
                f'stroke-width="3"/><text x="{lx + 24:.2f}" y="38" dy="0.32em" font-size="12" '
                f'fill="currentColor">{escape(_shorten(s.label, 20))}</text></g>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def result_plot(result: FileScore) -> str | None:
    """The one-clip plot (SVG), or None when there is nothing to plot (one window, silent audio, no score)."""
    if not result.ok or len(result.window_scores) < 2 or _is_silent(result):
        return None
    series = Series(Path(result.path).name, window_centres(result), result.window_scores)
    return window_plot_svg([series], result.duration)


def details(result: FileScore, example: Example | None = None) -> dict:
    """The machine-readable outcome (the API's answer)."""
    out = {
        "file": Path(result.path).name,
        "mos": None if result.mos is None else round(result.mos, 4),
        "quality": None if result.mos is None or _is_silent(result) else acr_label(result.mos),
        "duration_s": None if result.duration is None else round(result.duration, 4),
        "sampling_rate": result.sampling_rate,
        "channels": result.channels,
        "window_scores": [round(s, 4) for s in result.window_scores],
        "window_start_times": [round(s, 4) for s in result.window_start_times],
        "error": result.error,
        "warning": result.warning,
    }
    if example is not None:
        out["human_mos"] = round(example.human_mos, 4)
    return out


def mos_difference(result_a: FileScore, result_b: FileScore) -> float | None:
    """B's MOS minus A's (positive: B is rated better); None when either has no meaningful score."""
    if not (result_a.ok and result_b.ok) or _is_silent(result_a) or _is_silent(result_b):
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


def compare_markdown(result_a: FileScore, result_b: FileScore) -> str:
    """Both scores in a table, then the difference B - A in words."""
    difference = mos_difference(result_a, result_b)
    if difference is None:
        headline = "### ⚠️ No difference: one of the clips has no meaningful score"
    elif abs(difference) < 0.005:
        headline = "### B − A: 0.00 MOS (the same predicted quality)"
    else:
        better = "B" if difference > 0 else "A"
        headline = f"### B − A: {difference:+.2f} MOS ({better} is rated better)"
    lines = [headline, "", "| clip | file | MOS | quality | duration | note |", "|---|---|---|---|---|---|"]
    for name, result in (("A", result_a), ("B", result_b)):
        shown = result.ok and not _is_silent(result)
        note = _sentence(result.error) if result.error else (_sentence(result.warning) if result.warning else "")
        lines.append(
            f"| **{name}** | {_table_text(Path(result.path).name)} | {f'{result.mos:.2f}' if shown else '—'} | "
            f"{acr_label(result.mos) if shown else '—'} | "
            f"{'—' if result.duration is None else f'{result.duration:.2f} s'} | {_table_text(note)} |"
        )
    lines += ["", "The curves show each clip's window scores on one time axis (window centres, seconds)."]
    return "\n".join(lines)


def _table_text(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def compare_plot(result_a: FileScore, result_b: FileScore) -> str | None:
    """Both clips' window scores on one time axis (SVG), or None when neither has a meaningful score."""
    series, duration = [], 0.0
    for name, result, color in (("A", result_a, PLOT_COLORS[0]), ("B", result_b, PLOT_COLORS[1])):
        if result.ok and not _is_silent(result) and result.window_scores:
            label = f"{name}: {Path(result.path).name}"
            series.append(Series(label, window_centres(result), result.window_scores, color))
            duration = max(duration, result.duration)
    if not series:
        return None
    return window_plot_svg(series, duration, title="Score of each window, A and B")


class Handlers:
    def __init__(self, space: SpaceScorer):
        self.space = space
        self._csv_dir = Path(tempfile.gettempdir()) / "distill-mos-space"

    def score_one(self, audio_path: str | None):
        """One clip -> (result Markdown, per-window plot (gr.HTML update), details JSON). Never raises."""
        hidden_plot = gr.HTML(value="", visible=False)
        if not audio_path:
            return "Upload a file or record from the microphone first, then press **Score**.", hidden_plot, None
        try:
            result = self.space.score_path(audio_path)
            example = self.space.example_for(audio_path) if result.ok else None
        except Exception as error:  # noqa: BLE001 - the page shows a message, the app keeps serving
            logger.exception("unexpected error while scoring %s", audio_path)
            return f"### ⚠️ Could not score this file\n\nUnexpected error ({type(error).__name__}).", hidden_plot, None
        svg = result_plot(result)
        plot = gr.HTML(value=svg, visible=True) if svg else hidden_plot
        return result_markdown(result, example), plot, details(result, example)

    def score_api(self, audio: str | None) -> dict:
        """The `/predict` endpoint: a dict like `details`; a file that cannot be scored raises gr.Error(reason)."""
        if not audio:
            raise gr.Error("no audio file given", print_exception=False)
        try:
            result = self.space.score_path(audio)
        except Exception as error:  # noqa: BLE001 - the API answers with a reason, never a traceback
            logger.exception("unexpected error in /predict")
            raise gr.Error(f"Unexpected error ({type(error).__name__}).", print_exception=False) from None
        if result.error:
            raise gr.Error(_sentence(result.error), print_exception=False)
        return details(result, self.space.example_for(audio))

    # --- Compare ---

    def _score_pair(self, clip_a: str, clip_b: str) -> tuple[FileScore, FileScore]:
        result_a, result_b = self.space.score_paths([clip_a, clip_b])
        return result_a, result_b

    def compare(self, clip_a: str | None, clip_b: str | None):
        """Two clips -> (comparison Markdown, both window curves (gr.HTML update), comparison JSON). Never raises."""
        hidden_plot = gr.HTML(value="", visible=False)
        if not clip_a or not clip_b:
            return "Give two clips, **A** and **B**, then press **Compare**.", hidden_plot, None
        try:
            result_a, result_b = self._score_pair(clip_a, clip_b)
        except Exception as error:  # noqa: BLE001
            logger.exception("unexpected error while comparing")
            message = f"### ⚠️ Could not compare these clips\n\nUnexpected error ({type(error).__name__})."
            return message, hidden_plot, None
        svg = compare_plot(result_a, result_b)
        plot = gr.HTML(value=svg, visible=True) if svg else hidden_plot
        return compare_markdown(result_a, result_b), plot, comparison(result_a, result_b)

    def compare_api(self, clip_a: str | None, clip_b: str | None) -> dict:
        """The `/compare` endpoint: `comparison(...)`; a clip that cannot be scored raises gr.Error naming it."""
        if not clip_a or not clip_b:
            raise gr.Error("give two audio files, clip_a and clip_b", print_exception=False)
        try:
            result_a, result_b = self._score_pair(clip_a, clip_b)
        except Exception as error:  # noqa: BLE001
            logger.exception("unexpected error in /compare")
            raise gr.Error(f"Unexpected error ({type(error).__name__}).", print_exception=False) from None
        for name, result in (("A", result_a), ("B", result_b)):
            if result.error:
                reason = f"Clip {name} ({Path(result.path).name}): {_sentence(result.error)}"
                raise gr.Error(reason, print_exception=False)
        return comparison(result_a, result_b)

    def score_many(self, paths: list[str] | None):
        """Several files -> (status Markdown, table, CSV path). Never raises."""
        paths = [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in (paths or [])]
        if not paths:
            return "Upload one or more audio files, then press **Score all**.", pd.DataFrame(columns=TABLE_COLUMNS), None
        limit = self.space.limits.max_files
        try:
            results = self.space.score_paths(paths[:limit])
        except Exception as error:  # noqa: BLE001
            logger.exception("unexpected error while scoring a batch")
            return f"⚠️ Unexpected error ({type(error).__name__}); nothing was scored.", pd.DataFrame(columns=TABLE_COLUMNS), None
        results += [
            FileScore(path=p, error=f"skipped: this Space scores up to {limit} files per request") for p in paths[limit:]
        ]
        table = pd.DataFrame([self._table_row(r) for r in results], columns=TABLE_COLUMNS)
        failed = sum(not r.ok for r in results)
        status = f"Scored {len(results) - failed} of {len(results)} file(s)."
        if failed:
            status += f" {failed} could not be scored: see the error column."
        return status, table, self._write_csv(results)

    @staticmethod
    def show_csv(csv_path: str | None) -> gr.File:
        """The "Download CSV" box appears only once there is a CSV (run after `score_many`, so the API stays plain)."""
        return gr.File(visible=csv_path is not None)

    @staticmethod
    def _table_row(result: FileScore) -> list:
        shown = result.ok and not _is_silent(result)
        note = result.error or (f"warning: {result.warning}" if result.warning else "")
        return [
            Path(result.path).name,
            round(result.mos, 2) if shown else None,
            acr_label(result.mos) if shown else "",
            None if result.duration is None else round(result.duration, 2),
            note,
        ]

    def _write_csv(self, results: list[FileScore]) -> str:
        self._csv_dir.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - 3600
        for old in self._csv_dir.glob("*/*.csv"):  # keep the temp folder small on a long-running Space
            try:
                if old.stat().st_mtime < cutoff:
                    old.unlink()
                    old.parent.rmdir()
            except OSError:
                pass
        folder = Path(tempfile.mkdtemp(dir=self._csv_dir))
        path = folder / "distill-mos-scores.csv"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for r in results:
                writer.writerow({
                    "file": Path(r.path).name,
                    "mos": "" if r.mos is None else round(r.mos, 6),
                    "quality": "" if r.mos is None or _is_silent(r) else acr_label(r.mos),
                    "duration_s": "" if r.duration is None else round(r.duration, 4),
                    "sampling_rate": r.sampling_rate or "",
                    "channels": r.channels or "",
                    "error": r.error or "",
                    "warning": r.warning or "",
                })
        return str(path)


# --- the page -----------------------------------------------------------------------------------------------------

ABOUT = """
**What the score means.** Distill-MOS predicts the mean opinion score (MOS) that listeners would give this speech
on the ACR scale: 1 bad, 2 poor, 3 fair, 4 good, 5 excellent. It rates overall quality (noise, distortion, codec
artefacts, dropouts), not content, speaker or accent. The model scores {window} s windows; a longer clip gets a
window every second or so and its MOS is their mean (the plot shows them). Audio is resampled to 16 kHz and the
first channel is scored.

**Where it is less reliable.** It was trained on English speech at 16 kHz bandwidth: quality above 8 kHz is not
heard, and other languages are less reliable. On out-of-domain text-to-speech it is weak: Pearson correlation with
listeners is 0.22 and 0.32 on the French Blizzard 2023 TTS sets, against 0.95 on Tencent and 0.84 on TCD-VoIP
(paper's benchmark table, Stahl & Gamper, ICASSP 2025, [arXiv 2502.05356](https://arxiv.org/abs/2502.05356)). A single
clip's score is an estimate: compare systems over many clips. Silent or very short audio gets no
meaningful score.
"""


def build_demo(
    scorer: DistillMOSScorer | None = None,
    limits: Limits | None = None,
    examples: list[Example] | None = None,
) -> gr.Blocks:
    """The Space's page, queue included; not launched (see `launch_kwargs`). Loads the model if `scorer` is None."""
    limits = limits or Limits.from_env()
    examples = load_examples() if examples is None else examples
    space = SpaceScorer(scorer or load_scorer(), limits, examples)
    handlers = Handlers(space)

    with gr.Blocks(title="Distill-MOS: speech quality", delete_cache=(3600, 3600)) as demo:
        demo.space = space  # for tests and tooling
        gr.Markdown(
            "# Distill-MOS: speech quality estimator\n"
            "Upload or record speech and get its predicted mean opinion score (MOS, 1–5). "
            f"Model: [{MODEL_ID}](https://huggingface.co/{MODEL_ID}) (4.1 M parameters)."
        )
        with gr.Tabs():
            with gr.Tab("One clip", id="one"):
                with gr.Row():
                    with gr.Column():
                        audio = gr.Audio(
                            sources=["upload", "microphone"], type="filepath", label="Speech (upload or record)",
                            elem_id="audio-input",
                        )
                        score_button = gr.Button("Score", variant="primary", elem_id="score-button")
                    with gr.Column():
                        result = gr.Markdown(
                            "Upload a file or record from the microphone, then press **Score**.", elem_id="result"
                        )
                        plot = gr.HTML(visible=False, elem_id="window-plot", js_on_load=None)
                        with gr.Accordion("Details (JSON)", open=False):
                            detail_json = gr.JSON(label="details", elem_id="details")
                score_button.click(
                    handlers.score_one, audio, [result, plot, detail_json],
                    api_name="score_ui", api_visibility="undocumented",
                )
                if examples:
                    gr.Examples(
                        examples=[[str(e.path)] for e in examples],
                        inputs=[audio],
                        outputs=[result, plot, detail_json],
                        fn=handlers.score_one,
                        run_on_click=True,
                        cache_examples=False,
                        example_labels=[f"GenSpeech · {e.condition} · human MOS {e.human_mos:.2f}" for e in examples],
                        label="Examples: GenSpeech clips (Apache-2.0) with their human MOS; click one to score it",
                    )
            with gr.Tab("Several files", id="many"):
                # No file_types filter: Gradio would refuse the whole request for one file it does not class as
                # audio (.webm, .mp4, a stray .txt); each file instead gets its own row, a score or the reason.
                files = gr.File(
                    file_count="multiple", type="filepath", label="Audio files (wav, flac, mp3, m4a, ogg, webm, ...)",
                    elem_id="files-input",
                )
                many_button = gr.Button("Score all", variant="primary", elem_id="score-all-button")
                many_status = gr.Markdown(label="status", elem_id="batch-status")
                table = gr.Dataframe(
                    headers=TABLE_COLUMNS, interactive=False, label="scores", elem_id="batch-table", wrap=True
                )
                csv_file = gr.File(label="Download CSV", interactive=False, visible=False, elem_id="batch-csv")
                many_button.click(
                    handlers.score_many, files, [many_status, table, csv_file],
                    api_name="score_many", api_visibility="public",
                ).then(handlers.show_csv, csv_file, csv_file, api_visibility="private", queue=False)
            with gr.Tab("Compare", id="compare"):
                gr.Markdown(
                    "Score two clips of the same speech, e.g. **before / after** an enhancement or a codec, and see "
                    "both scores, their difference and both per-window curves on one time axis."
                )
                with gr.Row():
                    clip_a = gr.Audio(
                        sources=["upload", "microphone"], type="filepath", label="A (e.g. before)",
                        elem_id="compare-a",
                    )
                    clip_b = gr.Audio(
                        sources=["upload", "microphone"], type="filepath", label="B (e.g. after)",
                        elem_id="compare-b",
                    )
                compare_button = gr.Button("Compare", variant="primary", elem_id="compare-button")
                compare_result = gr.Markdown(
                    "Give two clips, **A** and **B**, then press **Compare**.", elem_id="compare-result"
                )
                compare_plot_html = gr.HTML(visible=False, elem_id="compare-plot", js_on_load=None)
                with gr.Accordion("Details (JSON)", open=False):
                    compare_json = gr.JSON(label="comparison", elem_id="compare-details")
                compare_button.click(
                    handlers.compare, [clip_a, clip_b], [compare_result, compare_plot_html, compare_json],
                    api_name="compare_ui", api_visibility="undocumented",
                )
        # The API for gradio_client (see README): /predict takes one audio file and returns a JSON object, /compare
        # takes two and returns both results and their difference. Hidden components, so that the API takes plain
        # files and answers plain JSON whatever the page shows.
        api_audio = gr.File(type="filepath", visible=False, label="audio")
        api_result = gr.JSON(visible=False, label="result")
        gr.Button(visible=False).click(handlers.score_api, api_audio, api_result, api_name="predict")
        api_clip_a = gr.File(type="filepath", visible=False, label="clip_a")
        api_clip_b = gr.File(type="filepath", visible=False, label="clip_b")
        api_comparison = gr.JSON(visible=False, label="comparison")
        gr.Button(visible=False).click(
            handlers.compare_api, [api_clip_a, api_clip_b], api_comparison, api_name="compare"
        )
        gr.Markdown(ABOUT.format(window=WINDOW_SECONDS))
        gr.Markdown(
            f"<small>Limits of this Space: {limits.describe()}. Larger jobs: `pip install` the model repository and "
            "use the `distill-mos` command line tool.</small>",
            elem_id="limits",
        )

    demo.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency)
    return demo


def launch_kwargs(limits: Limits | None = None, **overrides) -> dict:
    """`demo.launch` arguments: local by default, never a public share link, the upload size limit."""
    limits = limits or Limits.from_env()
    kwargs = {
        "server_name": os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        "server_port": int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        "share": False,
        "max_file_size": limits.max_upload_bytes,
        "show_error": False,  # gr.Error messages (readable reasons) still reach the page and clients; tracebacks never do
        "theme": gr.themes.Soft(),
    }
    kwargs.update(overrides)
    return kwargs


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    limits = Limits.from_env()
    try:  # requests run side by side: give each its share of the cores rather than oversubscribing them
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // limits.concurrency))
    except Exception:  # noqa: BLE001
        pass
    demo = build_demo(limits=limits)
    demo.launch(**launch_kwargs(limits))


if __name__ == "__main__":
    main()
