"""
Distill-MOS as a `torchmetrics.Metric`, in the conventions of torchmetrics' `DeepNoiseSuppressionMeanOpinionScore`:

    from distill_mos.torchmetrics import DistillMOS
    metric = DistillMOS(fs=16000)
    metric.update(enhanced)        # (..., time) waveforms, any device
    metric.compute()               # mean MOS over every clip seen (synced across processes in DDP)

Each clip is scored by `DistillMOSScorer.score_arrays`, the library's one scoring path, so a clip gets the score the
command line tool gives it. Needs `torchmetrics` (`pip install distill-mos-hf[torchmetrics]`).
"""

import os
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from .adapters import shared_scorer


class DistillMOS(Metric):
    """
    Mean Distill-MOS (1..5) of the waveforms passed to `update`.

    As input to `forward` and `update`: `preds` (`Tensor`), float waveforms of shape `(..., time)` at `fs` Hz, on any
    device; every leading index is one mono clip. As output of `forward` and `compute`: a scalar float64 tensor, the
    mean MOS over the clips (of the batch for `forward`, of everything since the last `reset` for `compute`). For
    each clip's score, use `DistillMOSScorer.score_arrays`.

    Args:
        fs: sampling rate of `preds` in Hz (resampled to 16 kHz inside, as the command line tool does).
        device: where the model runs ("cpu", "cuda", "cuda:1", "auto"). None (the default, as torchmetrics' DNSMOS):
            the device of the input.
        dtype: precision of the network, as `DistillMOSScorer.from_pretrained(dtype=...)` ("float32", exact; or
            "bfloat16", "float16", "auto").
        model: model folder or Hub id (default: `distill_mos.default_model_location()`).
        kwargs: torchmetrics' own `Metric` arguments (`sync_on_compute`, `dist_sync_fn`, ...).

    The model is loaded once per process for each (model, device, dtype) and shared by every `DistillMOS` instance.
    """

    sum_mos: Tensor
    total: Tensor
    full_state_update: bool = False
    is_differentiable: bool = False
    higher_is_better: bool = True
    plot_lower_bound: float = 1.0
    plot_upper_bound: float = 5.0

    def __init__(
        self,
        fs: int,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = "float32",
        model: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(fs, bool) or not isinstance(fs, int) or fs <= 0:
            raise ValueError(f"Argument `fs` must be a positive integer (Hz), got {fs!r}.")
        self.fs = fs
        # not `device` / `dtype`: Metric has properties of those names, for where its states live
        self.scoring_device = device
        self.scoring_dtype = dtype
        self.model_location = model
        self.add_state("sum_mos", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor) -> None:
        """Scores each clip of `preds` (`(..., time)`) and adds it to the running sum."""
        if not isinstance(preds, Tensor):
            raise TypeError(f"DistillMOS.update expects a torch.Tensor of shape (..., time), got {type(preds).__name__}.")
        if preds.ndim == 0 or preds.shape[-1] == 0:
            raise ValueError(f"DistillMOS.update expects waveforms of shape (..., time) with time > 0, got {tuple(preds.shape)}.")
        scorer = shared_scorer(self.model_location, self.scoring_device or preds.device, self.scoring_dtype)
        clips = preds.detach().reshape(-1, preds.shape[-1]).to("cpu", torch.float32).numpy()
        scores = scorer.score_arrays(list(clips), self.fs)
        self.sum_mos += torch.tensor([s.mos for s in scores], dtype=torch.float64).sum().to(self.sum_mos.device)
        self.total += len(scores)

    def compute(self) -> Tensor:
        """Mean MOS over every clip since the last `reset`."""
        return self.sum_mos / self.total


__all__ = ["DistillMOS"]
