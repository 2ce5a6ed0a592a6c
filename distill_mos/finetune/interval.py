"""
The score interval of a fine-tuned model, from the out-of-fold residuals of its `--cv` run.

`--cv K` scores every clip with a model that did not see its group; the split-conformal half-width of those
residuals (`distill_mos.calibration`) is the interval. The model trained on all clips afterwards carries it: the
K-fold "CV" interval of Barber, Candès, Ramdas and Tibshirani, "Predictive inference with the jackknife+" (Annals of
Statistics 49(1), 2021): out-of-fold residuals around the model fitted on all the data. Unlike their CV+ (coverage at
least 1 - 2 alpha for any training algorithm) it has no distribution-free guarantee; it is close to nominal when
training is stable, i.e. when the fold models score new clips as the final model does. CV+ would need all K fold
models at scoring time.
"""

import json

from ..calibration import CalibrationError, MOSInterval, calibrate

CV_METHOD = "split-conformal rank of the absolute out-of-fold residuals of grouped K-fold cross-validation"
FINAL_METHOD = ("K-fold CV interval (Barber et al. 2021, jackknife+ paper): absolute out-of-fold residuals of "
                "grouped K-fold cross-validation, around the model trained on all clips")
# What must be the same in the --cv run and the final run for the fold models' residuals to describe the final model.
SAME_RUN_KEYS = ("base_model", "label_range", "group_column", "settings")


def cross_validated_interval(
    clips, predictions: list[float], *, coverage: float, folds: int, data: str, group_column: str | None,
    label_range: tuple[float, float],
) -> tuple[MOSInterval | None, str | None]:
    """
    (interval, None) from `predictions` (out of fold, MOS 1..5) against the clips' 1..5 targets, grouped by the clips'
    group (each clip its own when there is no group column); (None, why) when the clips cannot give one.
    `clips` are `ClipWindows`; `label_range` is the labels' scale (what was mapped onto 1..5).
    """
    targets = [c.clip.target for c in clips]
    groups = [c.clip.group if c.clip.group is not None else c.clip.item for c in clips]
    try:
        interval = calibrate(predictions, targets, groups, coverage=coverage, folds=folds, data=data,
                             group_column=group_column, label_range=label_range)
    except CalibrationError as error:
        return None, str(error)
    return MOSInterval(**{**interval.to_config(), "method": CV_METHOD}), None


def _same(value) -> str:
    """A canonical JSON form: results.json's values (lists, None) compare equal to this run's (tuples, NaN)."""
    return json.dumps(value, sort_keys=True)


def carried_interval(earlier: dict | None, run: dict) -> tuple[MOSInterval | None, str | None]:
    """
    The interval a model trained on all clips carries: the one of `earlier` (a `--cv` run's results.json on the same
    labels and rows) when it has one and was trained as `run` (`SAME_RUN_KEYS`, JSON-safe values) is; else
    (None, why).
    """
    if earlier is None:
        return None, None
    if not earlier.get("interval"):
        return None, earlier.get("interval_error") or "the --cv run wrote no interval"
    different = [key for key in SAME_RUN_KEYS if _same(earlier.get(key)) != _same(run.get(key))]
    if different:
        return None, (f"the --cv run differs in {', '.join(different)}: its residuals do not describe this model; "
                      "run --cv again with the same options")
    return MOSInterval(**{**earlier["interval"], "method": FINAL_METHOD}), None


__all__ = ["CV_METHOD", "FINAL_METHOD", "carried_interval", "cross_validated_interval"]
