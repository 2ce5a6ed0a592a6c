"""
What the framework adapters (torchmetrics, Lhotse, evaluate) share: one `DistillMOSScorer` per model, device and
dtype in a process, so that a metric created per validation epoch or a measurement loaded per run does not reload
the weights each time.
"""

import functools
import os
from collections.abc import Sequence

import numpy as np
import torch

from .scorer import DistillMOSScorer, Score, default_model_location, resolve_device, resolve_dtype


@functools.lru_cache(maxsize=None)
def _load(location: str, device: str, dtype: torch.dtype) -> DistillMOSScorer:
    return DistillMOSScorer.from_pretrained(location, device=device, dtype=dtype)


def shared_scorer(
    location: str | os.PathLike | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "float32",
) -> DistillMOSScorer:
    """
    The process's scorer for (`location`, `device`, `dtype`), loaded on first use (arguments as for
    `DistillMOSScorer.from_pretrained`). Callers share it: they must not change its settings.
    """
    device = resolve_device(device)
    return _load(str(location or default_model_location()), str(device), resolve_dtype(dtype, device))


def score_each(scorer: DistillMOSScorer, clips: Sequence[np.ndarray | str], names: Sequence[str]) -> list[Score | str]:
    """
    `clips`: 16 kHz clips from `scorer.prepare`, or for an item that could not be prepared, the reason (a str).
    Returns one `Score` per clip, or the reason it has none (named by `names`, one per item), in input order: the
    good clips go through `scorer.score_prepared_each` together, so one bad item never loses the others' scores.
    """
    good = [clip for clip in clips if not isinstance(clip, str)]
    scores = iter(scorer.score_prepared_each(good) if good else [])
    results = []
    for clip, name in zip(clips, names, strict=True):
        outcome = clip if isinstance(clip, str) else next(scores)
        if isinstance(outcome, str) and not isinstance(clip, str):
            outcome = f"{name}: {outcome}"  # a scoring failure: score_prepared_each names no clip
        results.append(outcome)
    return results


__all__ = ["score_each", "shared_scorer"]
