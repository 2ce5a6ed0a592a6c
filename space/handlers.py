"""
The functions behind the page's buttons and the API's endpoints. Each takes what its components give (file paths)
and returns what its components show; the page handlers never raise (a message instead), the API handlers raise
`gr.Error` with a readable reason. New tabs add a method here and a builder in `page.py`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
import pandas as pd

from distill_mos import FileScore
from formatting import (
    CSV_COLUMNS,
    TABLE_COLUMNS,
    compare_markdown,
    comparison,
    csv_row,
    details,
    result_markdown,
    sentence,
    table_row,
    write_csv,
)
from plots import compare_plot, figure_png, result_plot
from scoring import SpaceScorer

logger = logging.getLogger("distill_mos.space")


def _plot_update(svg: str | None) -> gr.HTML:
    """A gr.HTML update: the SVG shown, or the plot hidden."""
    return gr.HTML(value=svg, visible=True) if svg else gr.HTML(value="", visible=False)


def _unexpected(where: str, error: Exception) -> str:
    """Logs an unexpected error with its traceback (server side) and returns the one line the user sees."""
    logger.exception("unexpected error %s", where)
    return f"Unexpected error ({type(error).__name__})."


class Handlers:
    def __init__(self, space: SpaceScorer):
        self.space = space

    # --- One clip ---

    def score_one(self, audio_path: str | None):
        """One clip -> (result Markdown, per-window plot (gr.HTML update), details JSON). Never raises."""
        if not audio_path:
            return "Upload a file or record from the microphone first, then press **Score**.", _plot_update(None), None
        try:
            result = self.space.score_path(audio_path)
            example = self.space.example_for(audio_path) if result.ok else None
        except Exception as error:  # noqa: BLE001 - the page shows a message, the app keeps serving
            message = _unexpected(f"while scoring {audio_path}", error)
            return f"### ⚠️ Could not score this file\n\n{message}", _plot_update(None), None
        return result_markdown(result, example), _plot_update(result_plot(result)), details(result, example, self.space.scorer.provenance)

    def score_api(self, audio: str | None) -> dict:
        """The `/predict` endpoint: a dict like `details`; a file that cannot be scored raises gr.Error(reason)."""
        if not audio:
            raise gr.Error("no audio file given", print_exception=False)
        try:
            result = self.space.score_path(audio)
        except Exception as error:  # noqa: BLE001 - the API answers with a reason, never a traceback
            raise gr.Error(_unexpected("in /predict", error), print_exception=False) from None
        if result.error:
            raise gr.Error(sentence(result.error), print_exception=False)
        return details(result, self.space.example_for(audio), self.space.scorer.provenance)

    # --- Compare ---

    def _score_pair(self, clip_a: str, clip_b: str) -> tuple[FileScore, FileScore]:
        result_a, result_b = self.space.score_paths([clip_a, clip_b])
        return result_a, result_b

    def compare(self, clip_a: str | None, clip_b: str | None):
        """Two clips -> (comparison Markdown, both window curves (gr.HTML update), comparison JSON). Never raises."""
        if not clip_a or not clip_b:
            return "Give two clips, **A** and **B**, then press **Compare**.", _plot_update(None), None
        try:
            result_a, result_b = self._score_pair(clip_a, clip_b)
        except Exception as error:  # noqa: BLE001
            message = _unexpected("while comparing", error)
            return f"### ⚠️ Could not compare these clips\n\n{message}", _plot_update(None), None
        plot = _plot_update(compare_plot(result_a, result_b))
        return compare_markdown(result_a, result_b), plot, comparison(result_a, result_b)

    def compare_api(self, clip_a: str | None, clip_b: str | None) -> dict:
        """The `/compare` endpoint: `comparison(...)`; a clip that cannot be scored raises gr.Error naming it."""
        if not clip_a or not clip_b:
            raise gr.Error("give two audio files, clip_a and clip_b", print_exception=False)
        try:
            result_a, result_b = self._score_pair(clip_a, clip_b)
        except Exception as error:  # noqa: BLE001
            raise gr.Error(_unexpected("in /compare", error), print_exception=False) from None
        for name, result in (("A", result_a), ("B", result_b)):
            if result.error:
                reason = f"Clip {name} ({Path(result.path).name}): {sentence(result.error)}"
                raise gr.Error(reason, print_exception=False)
        return comparison(result_a, result_b)

    # --- Several files ---

    def score_many(self, paths: list[str] | None):
        """Several files -> (status Markdown, table, CSV path). Never raises."""
        paths = [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in (paths or [])]
        empty = pd.DataFrame(columns=TABLE_COLUMNS)
        if not paths:
            return "Upload one or more audio files, then press **Score all**.", empty, None
        limit = self.space.limits.max_files
        try:
            results = self.space.score_paths(paths[:limit])
        except Exception as error:  # noqa: BLE001
            return f"⚠️ {_unexpected('while scoring a batch', error)} Nothing was scored.", empty, None
        results += [
            FileScore(path=p, error=f"skipped: this Space scores up to {limit} files per request") for p in paths[limit:]
        ]
        table = pd.DataFrame([table_row(r) for r in results], columns=TABLE_COLUMNS)
        failed = sum(not r.ok for r in results)
        status = f"Scored {len(results) - failed} of {len(results)} file(s)."
        if failed:
            status += f" {failed} could not be scored: see the error column."
        return status, table, write_csv([csv_row(r) for r in results], CSV_COLUMNS, "distill-mos-scores.csv")

    @staticmethod
    def batch_histogram(table: pd.DataFrame | None) -> gr.Image:
        """The batch's MOS histogram under the table (run after `score_many`), hidden while nothing is scored."""
        scores = [] if table is None or "MOS" not in table else pd.to_numeric(table["MOS"], errors="coerce").dropna()
        if len(scores) == 0:
            return gr.Image(value=None, visible=False)
        from distill_mos.corpus_report import histogram_figure

        return gr.Image(value=figure_png(histogram_figure(list(scores), "This batch"), "histogram.png"), visible=True)

    # --- Two systems ---

    def compare_systems(self, files_a: list[str] | None, files_b: list[str] | None):
        """
        Two sets of files (systems A and B, paired by file name) -> (Markdown: per system n, mean MOS and its 95%
        bootstrap interval, the paired difference with its interval and Wilcoxon p-value, files not in both;
        the comparison figure or None). Never raises.
        """
        sets = {name: [p if isinstance(p, str) else getattr(p, "name", str(p)) for p in (files or [])]
                for name, files in (("A", files_a), ("B", files_b))}
        if not sets["A"] or not sets["B"]:
            return "Upload the files of system **A** and of system **B**, then press **Compare systems**.", None
        limit = self.space.limits.max_files
        if len(sets["A"]) + len(sets["B"]) > limit:
            return f"⚠️ This Space compares up to {limit} files in all; score larger sets with `distill-mos compare-systems`.", None
        try:
            from distill_mos.compare import compare_systems

            results = self.space.score_paths(sets["A"] + sets["B"])
            scores = {name: {} for name in sets}
            for (name, path), result in zip([(n, p) for n in sets for p in sets[n]], results):
                scores[name][Path(path).name] = result.mos
            comparison = compare_systems(scores)
        except Exception as error:  # noqa: BLE001
            return f"⚠️ {_unexpected('while comparing systems', error)}", None
        failed = [f"{Path(r.path).name}: {sentence(r.error)}" for r in results if r.error]
        text = comparison.to_markdown()
        missing = [f"only in {other}: {', '.join(items)}" for system, items in comparison.missing.items() if items
                   for other in sets if other != system]
        if missing:
            text += "\n\n**Files not in both** (left out of the paired test): " + "; ".join(missing)
        if failed:
            text += "\n\n**Not scored:** " + "; ".join(failed)
        return text, figure_png(comparison.figure(), "comparison.png")

    @staticmethod
    def show_csv(csv_path: str | None) -> gr.File:
        """The "Download CSV" box appears only once there is a CSV (run after `score_many`, so the API stays plain)."""
        return gr.File(visible=csv_path is not None)
