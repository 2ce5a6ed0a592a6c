"""
Score intervals calibrated on a listening test: split-conformal prediction on the residuals of Distill-MOS scores
against human MOS (Vovk et al., "Algorithmic Learning in a Random World", 2005; Lei et al., "Distribution-free
predictive inference for regression", JASA 2018).

With n rated clips and residuals r_i = human_i - predicted_i, the half-width q is the ceil((n + 1) * coverage)-th
smallest |r_i|; then, for a new clip exchangeable with the calibration clips (audio like them, rated the same way),
`[score - q, score + q]` holds its human MOS with probability at least `coverage`. It says nothing about audio
unlike the calibration set (another language, codec family or listening-test design).

Clips of one stimulus (the same sentence under several conditions) are not independent, so the empirical coverage
is measured on unseen groups: in each of k grouped folds (scikit-learn's GroupKFold) q comes from the other folds
and coverage is counted on the held-out one. The interval is stored in the model's config as `mos_interval`
(`MOSInterval.to_config()`), and every score of that model then carries `mos_low` / `mos_high`.
"""

import math
from dataclasses import asdict, dataclass, field

import numpy as np

CONFIG_KEY = "mos_interval"
METHOD = "split-conformal, absolute residual"
# Fewer rated clips than this cannot give a meaningful interval; most listening tests rate hundreds.
MIN_LABELS = 10
MIN_GROUPS = 2


class CalibrationError(ValueError):
    """A label set that cannot calibrate an interval (too small, off the scale, one group): a usage error."""


@dataclass(frozen=True)
class MOSInterval:
    """
    A calibrated score interval: `score ± half_width` (clipped to the model's 1..5 scale).

    Attributes:
        coverage: the nominal share of human MOS inside the interval (e.g. 0.9).
        half_width: q, in MOS.
        empirical_coverage: the share measured on held-out groups (grouped folds), beside the nominal one.
        folds: how many grouped folds measured it.
        data: what it was calibrated on (label file names).
        size: rated clips used.
        groups: distinct stimuli (groups) among them.
        group_column: the label column that named the groups (None: each clip its own group).
        label_range: the scale of the labels, mapped linearly to 1..5.
        method: how q was computed.
    """

    coverage: float
    half_width: float
    empirical_coverage: float | None
    folds: int
    data: str
    size: int
    groups: int
    group_column: str | None = None
    label_range: list[float] = field(default_factory=lambda: [1.0, 5.0])
    method: str = METHOD

    def bounds(self, mos: float, low: float = 1.0, high: float = 5.0) -> tuple[float, float]:
        """(mos_low, mos_high) for one score, within the scale [low, high]."""
        return max(low, mos - self.half_width), min(high, mos + self.half_width)

    def to_config(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line: half-width, nominal and measured coverage, folds, clips, groups and data."""
        empirical = "n/a" if self.empirical_coverage is None else f"{self.empirical_coverage:.1%}"
        return (f"score ± {self.half_width:.3f} MOS, nominal coverage {self.coverage:.0%}, measured {empirical} on "
                f"held-out groups ({self.folds} grouped folds), from {self.size} rated clips in {self.groups} groups "
                f"({self.data})")

    @classmethod
    def from_config(cls, config) -> "MOSInterval | None":
        """The interval a model config (or its dict) carries, or None for an uncalibrated model."""
        data = config.get(CONFIG_KEY) if isinstance(config, dict) else getattr(config, CONFIG_KEY, None)
        return None if not data else cls(**data)


def require_enough_labels(n: int) -> None:
    """Raises CalibrationError when `n` rated clips are fewer than MIN_LABELS (checked before anything is scored)."""
    if n < MIN_LABELS:
        raise CalibrationError(f"{n} rated clips are too few to calibrate an interval (at least {MIN_LABELS})")


def conformal_half_width(residuals, coverage: float) -> float:
    """
    The split-conformal half-width: the ceil((n + 1) * coverage)-th smallest |residual|. Raises CalibrationError
    when n is too small for that rank to exist (fewer than coverage / (1 - coverage) residuals).
    """
    residuals = np.abs(np.asarray(residuals, dtype=np.float64))
    n = len(residuals)
    if not 0 < coverage < 1:
        raise CalibrationError(f"coverage must be between 0 and 1, got {coverage}")
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        needed = math.ceil(coverage / (1 - coverage))
        raise CalibrationError(f"{n} rated clips are too few for a {coverage:.0%} interval: it needs at least {needed}")
    return float(np.sort(residuals)[rank - 1])


def grouped_coverage(residuals, groups, coverage: float, folds: int = 5) -> tuple[float, int]:
    """
    (empirical coverage, folds used): in each grouped fold the half-width comes from the other folds' residuals
    and the held-out fold's clips, from stimuli never seen in calibration, are counted inside or not.
    """
    from sklearn.model_selection import GroupKFold

    residuals, groups = np.abs(np.asarray(residuals, dtype=np.float64)), np.asarray(groups)
    folds = min(folds, len(set(groups.tolist())))
    if folds < 2:
        raise CalibrationError("the labels hold one group only: coverage on unseen stimuli cannot be measured")
    inside = np.zeros(len(residuals), dtype=bool)
    for train, test in GroupKFold(n_splits=folds).split(residuals, groups=groups):
        try:
            inside[test] = residuals[test] <= conformal_half_width(residuals[train], coverage)
        except CalibrationError as error:  # say that the clips counted are one fold's calibration part, not all
            raise CalibrationError(f"measuring coverage on held-out groups ({folds} grouped folds), one fold's "
                                   f"calibration part: {error}") from None
    return float(inside.mean()), folds


def to_mos_scale(labels, label_range: tuple[float, float], names=None) -> np.ndarray:
    """
    Human labels on the scale [low, high] -> 1..5 (linearly). Raises CalibrationError naming the first label off
    that scale (e.g. a 0..100 MUSHRA score given without --label-range 0 100).
    """
    low, high = map(float, label_range)
    if not high > low:
        raise CalibrationError(f"--label-range: LOW must be below HIGH, got {low:g} {high:g}")
    labels = np.asarray(labels, dtype=np.float64)
    off = np.flatnonzero((labels < low) | (labels > high) | ~np.isfinite(labels))
    if len(off):
        where = f" ({names[off[0]]})" if names is not None else ""
        raise CalibrationError(
            f"{len(off)} label(s) off the scale {low:g}..{high:g}, e.g. {labels[off[0]]:g}{where}; "
            "give the labels' scale with --label-range LOW HIGH"
        )
    return 1 + 4 * (labels - low) / (high - low)


def calibrate(
    predicted,
    human,
    groups=None,
    coverage: float = 0.9,
    folds: int = 5,
    data: str = "",
    group_column: str | None = None,
    label_range: tuple[float, float] = (1.0, 5.0),
) -> MOSInterval:
    """
    The interval from scores `predicted` and human MOS `human` (already on 1..5), one per clip, grouped by stimulus
    `groups` (None: each clip its own group). Raises CalibrationError on too few clips or groups.
    """
    predicted, human = np.asarray(predicted, dtype=np.float64), np.asarray(human, dtype=np.float64)
    if len(predicted) != len(human):
        raise CalibrationError(f"got {len(predicted)} scores for {len(human)} labels")
    require_enough_labels(len(human))
    groups = np.arange(len(human)) if groups is None else np.asarray(groups)
    if len(set(groups.tolist())) < MIN_GROUPS:
        raise CalibrationError(f"the labels hold {len(set(groups.tolist()))} group(s): at least {MIN_GROUPS} are needed")
    residuals = human - predicted
    empirical, used = grouped_coverage(residuals, groups, coverage, folds)
    return MOSInterval(
        coverage=coverage,
        half_width=conformal_half_width(residuals, coverage),
        empirical_coverage=empirical,
        folds=used,
        data=data,
        size=len(human),
        groups=len(set(groups.tolist())),
        group_column=group_column,
        label_range=[float(v) for v in label_range],
    )


__all__ = ["CONFIG_KEY", "CalibrationError", "MOSInterval", "calibrate", "conformal_half_width", "grouped_coverage",
           "to_mos_scale"]
