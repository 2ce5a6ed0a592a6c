"""
The per-window plot: window scores against time as inline SVG (a gr.HTML value), for one clip, two compared clips
and the live curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

from distill_mos import FileScore
from formatting import has_score, new_download_path, window_centres
from settings import WINDOW_SECONDS

# --- the per-window plot ------------------------------------------------------------------------------------------
# Drawn here as inline SVG (a gr.HTML value) rather than gr.LinePlot: the page shows exactly the points of the
# response it received (gr.LinePlot redrew the previous response's data when its value and x_lim changed together),
# and the time axis gets at most PLOT_MAX_TICKS labels however long the clip.

PLOT_WIDTH, PLOT_HEIGHT = 640, 290
PLOT_MARGIN = {"left": 46, "right": 18, "top": 34, "bottom": 46}
PLOT_MAX_TICKS = 8
PLOT_COLORS = ("#4f46e5", "#ea580c")  # clip A / the only clip: indigo; clip B: orange
LEGEND_ROW = 16  # px per legend row
# characters of a legend label: the plot's width less the swatch, at ~7.5 px per character of 12 px text (wide letters)
LEGEND_CHARACTERS = (PLOT_WIDTH - PLOT_MARGIN["left"] - PLOT_MARGIN["right"] - 24) // 8


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


def window_plot_svg(
    series: list[Series], duration: float, title: str = "Score of each window", x_label: str = "time (s), window centre"
) -> str:
    """
    The per-window scores as an SVG line plot: x is time in seconds (0 .. `duration`, window centres), y is MOS 1..5.
    Each point is a `<circle class="mos-point" data-series=...>` with a tooltip; axis labels are `<text>` in
    `<g class="x-tick">` / `<g class="y-tick">`, so the figure can be read back (the browser test does).
    """
    legend = len(series) > 1
    # the legend sits under the title, one row per series, so that long file names never run into each other
    left, top = PLOT_MARGIN["left"], PLOT_MARGIN["top"] + (LEGEND_ROW * len(series) if legend else 0)
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
        f'fill="currentColor">{escape(x_label)}</text>',
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
    if legend:  # under the title, one row per series, left-aligned with the plot
        for index, s in enumerate(series):
            ly = PLOT_MARGIN["top"] + 4 + LEGEND_ROW * index
            color = s.color or PLOT_COLORS[index % len(PLOT_COLORS)]
            parts.append(
                f'<g class="legend"><line x1="{left:.2f}" x2="{left + 18:.2f}" y1="{ly}" y2="{ly}" stroke="{color}" '
                f'stroke-width="3"/><text x="{left + 24:.2f}" y="{ly}" dy="0.32em" font-size="12" '
                f'fill="currentColor">{escape(_shorten(s.label, LEGEND_CHARACTERS))}<title>{escape(s.label)}</title>'
                "</text></g>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def says_something(result: FileScore) -> bool:
    """
    Whether a clip's window curve shows anything: scored, and its window centres spread over at least half a window
    (3.84 s, clips from 11.5 s). A 7.8 s clip has two windows 0.12 s apart, one point on top of the other: its MOS
    says it all.
    """
    centres = window_centres(result)
    return has_score(result) and len(centres) >= 2 and centres[-1] - centres[0] >= WINDOW_SECONDS / 2


def result_plot(result: FileScore) -> str | None:
    """The one-clip plot (SVG), or None when it would say nothing (see `says_something`)."""
    if not says_something(result):
        return None
    series = Series(Path(result.path).name, window_centres(result), result.window_scores)
    return window_plot_svg([series], result.duration)


def compare_plot(result_a: FileScore, result_b: FileScore) -> str | None:
    """
    Both clips' window scores on one time axis (SVG), or None when neither curve says anything (see
    `says_something`): two clips of one or two windows are compared by the table alone.
    """
    pairs = (("A", result_a, PLOT_COLORS[0]), ("B", result_b, PLOT_COLORS[1]))
    if not any(says_something(result) for _, result, _ in pairs):
        return None
    series, duration = [], 0.0
    for name, result, color in pairs:
        if has_score(result) and result.window_scores:
            label = f"{name}: {Path(result.path).name}"
            series.append(Series(label, window_centres(result), result.window_scores, color))
            duration = max(duration, result.duration)
    return window_plot_svg(series, duration, title="Score of each window, A and B")


def figure_png(figure, name: str) -> str:
    """Saves a matplotlib figure (the library's report and comparison figures) as a PNG download and closes it, so
    that a long-running Space keeps no figure in memory; returns the file's path."""
    import matplotlib.pyplot as plt

    path = new_download_path(name)
    try:
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)
    return str(path)
