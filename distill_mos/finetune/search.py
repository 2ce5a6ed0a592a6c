"""
`--search`: the learning rate and the steps chosen by an inner grouped cross-validation on the training clips only.

Called by `training.fit` with the clips it is about to train on, so inside an outer cross-validation fold it never
receives that fold's test clips: the outer out-of-fold figure stays an honest estimate of the whole procedure
(search included), as nested cross-validation requires.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .data import FinetuneError, grouped_folds
from .model import ClipWindows, DistillMOSClipRegressor, predict

# The settings that matter most on small tests (bench/README.md, "Fine-tuning settings"): 3 x 2 candidates.
SEARCH_GRID = {"learning_rate": (5e-5, 1e-4, 2e-4), "steps": (300, 600)}
INNER_FOLDS = 3


@dataclass
class SearchResult:
    """The chosen settings and every candidate's pooled inner out-of-fold PCC and MSE (on the MOS targets)."""

    settings: object  # FinetuneSettings: the input settings with the chosen learning rate and steps
    candidates: list[dict]
    inner_folds: int

    def summary(self) -> dict:
        chosen = {"learning_rate": self.settings.learning_rate, "steps": self.settings.steps}
        return {"chosen": chosen, "inner_folds": self.inner_folds, "candidates": self.candidates}


def candidates(settings) -> list:
    """The grid's settings: `settings` with each learning rate and step count (and no search of their own)."""
    return [replace(settings, learning_rate=rate, steps=steps, epochs=None, search=False)
            for rate in SEARCH_GRID["learning_rate"] for steps in SEARCH_GRID["steps"]]


def _pcc(predictions: list[float], targets: list[float]) -> float:
    if np.std(predictions) == 0 or np.std(targets) == 0:
        return float("nan")
    return float(np.corrcoef(predictions, targets)[0, 1])


def search_settings(model, clips: Sequence[ClipWindows], settings, *, seed: int, verbose: bool = True,
                    prefix: str = "") -> SearchResult:
    """
    Grouped `INNER_FOLDS`-fold cross-validation of every candidate of `SEARCH_GRID` on `clips` (nothing else is
    seen); the candidate with the best pooled out-of-fold PCC wins (ties: the earlier one). `model` is left with
    its starting weights.
    """
    from .training import clip_groups, fit, snapshot

    groups = clip_groups(clips)
    k = min(INNER_FOLDS, len(set(groups)))
    if k < 2:
        raise FinetuneError("--search needs at least 2 groups among the training clips.")
    folds = grouped_folds(groups, k, seed)
    cached = not settings.train_all
    targets = [clip.clip.target for clip in clips]
    start = snapshot(model)
    results = []
    try:
        for candidate in candidates(settings):
            predictions = [0.0] * len(clips)
            for test_rows in folds:
                held = set(test_rows)
                model.load_state_dict(start)
                fit(model, [clips[i] for i in range(len(clips)) if i not in held], candidate, seed=seed,
                    verbose=False, measure_loss=False)
                scores = predict(DistillMOSClipRegressor(model, cached_features=cached), [clips[i] for i in test_rows])
                for row, score in zip(test_rows, scores):
                    predictions[row] = score
            pcc = _pcc(predictions, targets)
            mse = float(np.mean((np.array(predictions) - np.array(targets)) ** 2))
            results.append({"learning_rate": candidate.learning_rate, "steps": candidate.steps, "pcc": pcc,
                            "mse": mse})
            if verbose:
                print(f"{prefix}search: learning rate {candidate.learning_rate:g}, {candidate.steps} steps: inner "
                      f"PCC {pcc:.3f}, MSE {mse:.4f}", flush=True)
    finally:
        model.load_state_dict(start)
        model.eval()
    best = max(range(len(results)), key=lambda i: (-math.inf if math.isnan(results[i]["pcc"]) else results[i]["pcc"],
                                                   -i))
    chosen = candidates(settings)[best]
    if verbose:
        print(f"{prefix}search chose learning rate {chosen.learning_rate:g}, {chosen.steps} steps", flush=True)
    return SearchResult(chosen, _json_ready(results), k)


def _json_ready(results: list[dict]) -> list[dict]:
    return [{key: (None if isinstance(value, float) and not math.isfinite(value) else value)
             for key, value in row.items()} for row in results]
