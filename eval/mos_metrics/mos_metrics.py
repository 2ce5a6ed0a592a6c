"""MOS agreement metrics for `evaluate`: PCC, SRCC, KTAU, MSE and RMSE between predicted and human MOS.

Load it offline from this folder:

    import evaluate
    metric = evaluate.load("eval/mos_metrics")
    metric.compute(predictions=[3.1, 2.0, 4.2], references=[3.0, 1.5, 4.5])
    metric.compute(predictions=p, references=r, systems=ids)   # adds system-level figures (means per system)
"""

import math

import datasets
import evaluate
import numpy as np
from scipy import stats

_CITATION = """\
@inproceedings{stahl2025distillmos,
  title={Distillation and Pruning for Scalable Self-Supervised Representation-Based Speech Quality Assessment},
  author={Stahl, Benjamin and Gamper, Hannes},
  booktitle={ICASSP},
  year={2025}
}
"""

_DESCRIPTION = """\
Agreement between predicted and human mean opinion scores (MOS), as reported for speech quality estimators:
Pearson's linear correlation (PCC), Spearman's rank correlation (SRCC), Kendall's tau-b (KTAU), the mean squared
error (MSE) and its root (RMSE). Given system (or condition) ids, the same figures are also computed at the system
level, on the mean prediction and the mean human score of each system, as the VoiceMOS challenge reports them.
Correlations are computed on any rating scale (MOS 1..5, MUSHRA 0..100, ...); MSE and RMSE only on the MOS 1..5
scale, since an error between a 1..5 prediction and another scale means nothing.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted MOS, one per utterance.
    references (`list` of `float`): human MOS (or other ratings), one per utterance.
    systems (`list` of `str` or `int`, optional): system or condition id of each utterance; adds `system_*` figures.
    mos_scale (`bool`, optional): whether the references are on the MOS 1..5 scale, which decides whether MSE and
        RMSE are computed. Default: detected (all references within 1..5).
Returns:
    n, pcc, srcc, ktau, mse, rmse (None when not on the 1..5 scale), mos_scale; with `systems` also n_systems,
    system_pcc, system_srcc, system_ktau, system_mse, system_rmse. A correlation that is undefined (fewer than two
    items, or constant predictions or references) is NaN.
Examples:
    >>> metric = evaluate.load("eval/mos_metrics")
    >>> r = metric.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[1.5, 2.0, 3.5, 4.0])
    >>> round(r["pcc"], 4), r["srcc"], r["ktau"], round(r["rmse"], 4)
    (0.9762, 1.0, 1.0, 0.3536)
"""


def _correlations(predictions: np.ndarray, references: np.ndarray) -> tuple[float, float, float]:
    if len(predictions) < 2 or np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return math.nan, math.nan, math.nan
    return (
        float(stats.pearsonr(predictions, references)[0]),
        float(stats.spearmanr(predictions, references)[0]),
        float(stats.kendalltau(predictions, references)[0]),
    )


def mos_agreement(predictions, references, systems=None, mos_scale: bool | None = None) -> dict:
    """The metric as a plain function (what `compute` returns), for use without `evaluate`."""
    predictions = np.asarray(predictions, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    if predictions.shape != references.shape or predictions.ndim != 1:
        raise ValueError(f"predictions and references must be two lists of equal length, got {predictions.shape} and {references.shape}.")
    if not (np.isfinite(predictions).all() and np.isfinite(references).all()):
        raise ValueError("predictions and references must be finite numbers (drop unscored or unrated items first).")
    if mos_scale is None:
        mos_scale = bool(len(references)) and bool(((references >= 1) & (references <= 5)).all())
    result = {"n": int(len(predictions)), "mos_scale": bool(mos_scale)}
    result["pcc"], result["srcc"], result["ktau"] = _correlations(predictions, references)
    mse = float(np.mean((predictions - references) ** 2)) if mos_scale and len(predictions) else None
    result["mse"], result["rmse"] = mse, (math.sqrt(mse) if mse is not None else None)

    if systems is not None:
        systems = [str(s) for s in systems]
        if len(systems) != len(predictions):
            raise ValueError(f"got {len(predictions)} predictions but {len(systems)} system ids.")
        ids = sorted(set(systems))
        index = {s: i for i, s in enumerate(ids)}
        groups = np.array([index[s] for s in systems], dtype=np.int64)
        counts = np.bincount(groups, minlength=len(ids))
        sys_pred = np.bincount(groups, weights=predictions, minlength=len(ids)) / counts
        sys_ref = np.bincount(groups, weights=references, minlength=len(ids)) / counts
        result["n_systems"] = len(ids)
        result["system_pcc"], result["system_srcc"], result["system_ktau"] = _correlations(sys_pred, sys_ref)
        sys_mse = float(np.mean((sys_pred - sys_ref) ** 2)) if mos_scale and len(ids) else None
        result["system_mse"] = sys_mse
        result["system_rmse"] = math.sqrt(sys_mse) if sys_mse is not None else None
    return result


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MosMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=[
                "https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.pearsonr.html",
                "https://arxiv.org/abs/2502.05356",
            ],
        )

    def _compute(self, predictions, references, systems=None, mos_scale=None):
        return mos_agreement(predictions, references, systems=systems, mos_scale=mos_scale)
