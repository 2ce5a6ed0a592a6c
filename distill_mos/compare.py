"""
System comparison: per-system mean MOS with a bootstrap confidence interval, and for each pair of systems the mean
paired difference on the items both have, its bootstrap interval and a Wilcoxon signed-rank test, corrected for
multiple comparisons (Holm). The same input and seed give the same table.

    from distill_mos.compare import compare_systems
    c = compare_systems({"codec_a": {"utt1.wav": 3.1, "utt2.wav": 3.4}, "codec_b": {"utt1.wav": 3.6, ...}})
    c.systems_frame(), c.pairs_frame(), c.to_markdown(), c.figure()

Statistics are scipy.stats': `bootstrap` (BCa intervals) and `wilcoxon`. scipy has no Holm step-down correction
(`false_discovery_control` is Benjamini-Hochberg, which controls another error rate), so `holm` below is its
definition in a few lines; statsmodels' `multipletests(method="holm")` gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
N_RESAMPLES = 9999
ALPHA = 0.05
# scipy.stats.bootstrap holds n_resamples x batch values at once: keep that near 20 million floats.
_BOOTSTRAP_VALUES = 20_000_000


class CompareError(ValueError):
    """Inputs that cannot be compared (fewer than two systems, no item in common): the message says which."""


@dataclass
class SystemSummary:
    """One system: `n` items scored, their mean MOS and its bootstrap interval (NaN with fewer than 2 items)."""

    system: str
    n: int
    mean_mos: float
    ci_low: float
    ci_high: float
    failed: int = 0  # items the system has but that could not be scored


@dataclass
class PairComparison:
    """
    `system_b` against `system_a` on the `n_common` items both scored: `mean_difference` = mean(b - a) in MOS, its
    bootstrap interval, the Wilcoxon signed-rank statistic and p-value, and `p_holm` (Holm-corrected across pairs);
    `significant`: p_holm < alpha. NaN where the pair has no item in common.
    """

    system_a: str
    system_b: str
    n_common: int
    mean_difference: float
    ci_low: float
    ci_high: float
    wilcoxon_statistic: float
    p_value: float
    p_holm: float = math.nan
    significant: bool = False


@dataclass
class SystemComparison:
    """The comparison of all systems. `missing[system]`: items other systems have that this one lacks (sorted)."""

    systems: list[SystemSummary]
    pairs: list[PairComparison]
    missing: dict[str, list[str]]
    failed: dict[str, list[str]]
    seed: int
    confidence_level: float = CONFIDENCE
    n_resamples: int = N_RESAMPLES
    alpha: float = ALPHA
    correction: str = "holm"
    notes: list[str] = field(default_factory=list)

    def systems_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(s) for s in self.systems], columns=list(SystemSummary.__dataclass_fields__))

    def pairs_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(p) for p in self.pairs], columns=list(PairComparison.__dataclass_fields__))

    def missing_frame(self) -> pd.DataFrame:
        rows = [(s, item, "missing") for s, items in self.missing.items() for item in items]
        rows += [(s, item, "failed") for s, items in self.failed.items() for item in items]
        return pd.DataFrame(rows, columns=["system", "item", "why"])

    def to_dict(self) -> dict:
        """JSON-ready (NaN as None)."""

        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return clean(asdict(self))

    def to_markdown(self) -> str:
        """Two Markdown tables (systems; pairs) to paste into a paper or an issue."""
        level = f"{100 * self.confidence_level:g}%"

        def f(value, digits=3):
            return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

        def p(value):
            return "–" if not math.isfinite(value) else (f"{value:.2e}" if value < 1e-3 else f"{value:.3f}")

        lines = [f"| system | n | mean MOS | {level} CI |", "|---|---:|---:|---|"]
        lines += [f"| {s.system} | {s.n} | {f(s.mean_mos)} | [{f(s.ci_low)}, {f(s.ci_high)}] |" for s in self.systems]
        if self.pairs:
            lines += ["", f"| B | A | n common | mean B − A | {level} CI | Wilcoxon p | Holm p |",
                      "|---|---|---:|---:|---|---:|---:|"]
            lines += [
                f"| {q.system_b} | {q.system_a} | {q.n_common} | {f(q.mean_difference)} | "
                f"[{f(q.ci_low)}, {f(q.ci_high)}] | {p(q.p_value)} | {p(q.p_holm)}{' *' if q.significant else ''} |"
                for q in self.pairs
            ]
        lines += ["", f"Bootstrap: scipy.stats.bootstrap, BCa, {self.n_resamples} resamples, seed {self.seed}. "
                      f"Paired test: Wilcoxon signed-rank on the items both systems scored; * Holm-corrected p < "
                      f"{self.alpha:g}."]
        if any(self.missing.values()):
            lines.append("Missing items: " + "; ".join(f"{s}: {len(m)}" for s, m in self.missing.items() if m) + ".")
        return "\n".join(lines) + "\n"

    def figure(self):
        """A matplotlib Figure: means with their intervals (left), paired differences with theirs (right)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        pairs = [q for q in self.pairs if q.n_common]
        figure, (left, right) = plt.subplots(
            1, 2, figsize=(11, max(2.6, 0.45 * max(len(self.systems), len(pairs)) + 1.4)), dpi=100,
            layout="constrained", gridspec_kw={"width_ratios": [1, 1.2]},
        )
        y = np.arange(len(self.systems))
        means = np.array([s.mean_mos for s in self.systems])
        low = np.array([s.ci_low for s in self.systems])
        high = np.array([s.ci_high for s in self.systems])
        left.errorbar(means, y, xerr=np.nan_to_num([means - low, high - means]), fmt="o", color="#4c72b0", capsize=4)
        left.set(yticks=y, yticklabels=[f"{s.system} (n={s.n})" for s in self.systems],
                 xlabel=f"mean MOS, {100 * self.confidence_level:g}% bootstrap CI", title="Systems")
        left.invert_yaxis()
        left.grid(axis="x", alpha=0.3)
        if pairs:
            y = np.arange(len(pairs))
            d = np.array([q.mean_difference for q in pairs])
            err = np.nan_to_num([d - np.array([q.ci_low for q in pairs]), np.array([q.ci_high for q in pairs]) - d])
            colors = ["#c44e52" if q.significant else "#8c8c8c" for q in pairs]
            for i in range(len(pairs)):
                right.errorbar(d[i], y[i], xerr=err[:, i : i + 1], fmt="o", color=colors[i], capsize=4)
            right.axvline(0, color="black", lw=0.8)
            right.set(yticks=y, yticklabels=[f"{q.system_b} − {q.system_a} (n={q.n_common})" for q in pairs],
                      xlabel="mean paired difference (MOS)",
                      title=f"Paired differences (red: Holm p < {self.alpha:g})")
            right.invert_yaxis()
            right.grid(axis="x", alpha=0.3)
        else:
            right.axis("off")
            right.text(0.5, 0.5, "no items in common: no paired differences", ha="center", va="center")
        return figure


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count among the tests)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted


def mean_ci(values: np.ndarray, confidence_level: float, n_resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """BCa bootstrap interval of the mean of `values` (1-D); NaN with fewer than 2 values, (v, v) when all are v."""
    from scipy import stats

    if len(values) < 2:
        return math.nan, math.nan
    if np.ptp(values) == 0:  # BCa is undefined (zero variance); every resample has this mean
        return float(values[0]), float(values[0])
    result = stats.bootstrap(
        (values,), np.mean, n_resamples=n_resamples, confidence_level=confidence_level, method="BCa",
        batch=max(1, _BOOTSTRAP_VALUES // len(values)), rng=rng,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _paired_test(differences: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    if len(differences) == 0:
        return math.nan, math.nan
    if not differences.any():  # identical scores: no evidence of a difference (scipy warns and says the same)
        return 0.0, 1.0
    result = stats.wilcoxon(differences)
    return float(result.statistic), float(result.pvalue)


def _as_mapping(scores) -> dict[str, float]:
    if isinstance(scores, Mapping):
        items = scores.items()
    elif isinstance(scores, pd.Series):
        items = scores.items()
    else:  # a plain sequence: items are positions (two uploads of the same utterances, in the same order)
        items = enumerate(scores)
    return {str(k): (math.nan if v is None else float(v)) for k, v in items}


def compare_systems(
    scores: Mapping[str, Mapping[str, float | None] | Sequence[float | None]],
    seed: int = 0,
    confidence_level: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    alpha: float = ALPHA,
) -> SystemComparison:
    """
    `scores`: system name -> {item: MOS or None (not scored)}, or -> a list of MOS (items are positions, so two
    lists pair element by element). Items pair across systems by key (e.g. the file's path relative to the
    system's folder). Pairs are (earlier system, later system) in the given order; differences are later - earlier.
    """
    if len(scores) < 2:
        raise CompareError(f"compare needs at least two systems, got {len(scores)}: {list(scores)}")
    tables = {name: _as_mapping(values) for name, values in scores.items()}
    every = sorted(set().union(*tables.values()))
    missing = {name: sorted(set(every) - set(t)) for name, t in tables.items()}
    failed = {name: sorted(k for k, v in t.items() if not math.isfinite(v)) for name, t in tables.items()}
    scored = {name: {k: v for k, v in t.items() if math.isfinite(v)} for name, t in tables.items()}

    notes = []
    systems = []
    for index, (name, values) in enumerate(scored.items()):
        x = np.array(list(values.values()), dtype=float)
        low, high = mean_ci(x, confidence_level, n_resamples, np.random.default_rng([seed, 0, index]))
        systems.append(SystemSummary(name, len(x), float(x.mean()) if len(x) else math.nan, low, high, len(failed[name])))
        if not len(x):
            notes.append(f"{name}: no item was scored")
    names = list(scored)
    pairs = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b = names[j]
            common = sorted(set(scored[a]) & set(scored[b]))
            d = np.array([scored[b][k] - scored[a][k] for k in common], dtype=float)
            low, high = mean_ci(d, confidence_level, n_resamples, np.random.default_rng([seed, 1, i, j]))
            statistic, p = _paired_test(d)
            pairs.append(PairComparison(a, b, len(common), float(d.mean()) if len(d) else math.nan, low, high, statistic, p))
            if not common:
                notes.append(f"{a} and {b} have no scored item in common: no paired comparison")
    for q, adjusted in zip(pairs, holm([q.p_value for q in pairs])):
        q.p_holm = float(adjusted)
        q.significant = bool(math.isfinite(adjusted) and adjusted < alpha)
    for name, items in missing.items():
        if items:
            notes.append(f"{name} lacks {len(items)} item(s) the others have, e.g. {items[0]}")
    return SystemComparison(systems, pairs, missing, failed, seed, confidence_level, n_resamples, alpha, "holm", notes)


__all__ = [
    "CompareError", "PairComparison", "SystemComparison", "SystemSummary", "compare_systems", "holm", "mean_ci",
]
