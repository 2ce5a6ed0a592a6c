"""
What the framework adapters (torchmetrics, Lhotse, evaluate) share: one `DistillMOSScorer` per model, device and
dtype in a process, so that a metric created per validation epoch or a measurement loaded per run does not reload
the weights each time. They all score through its `score_items` (or `score_arrays`), the one scoring path.
"""

import functools
import os

import torch

from .scorer import DistillMOSScorer, default_model_location, resolve_device, resolve_dtype


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


__all__ = ["shared_scorer"]
