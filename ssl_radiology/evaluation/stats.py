"""Statistics over replicates: the numbers a paper table needs, with the pre-training run as the unit.

Follows DESIGN.md §4 for the formulas: mean ± sample standard deviation (ddof=1), a 95 % confidence interval
of the mean from the t-distribution (few replicates, so not the normal approximation), Welch's t-test
between two conditions (unequal variances). What changed is *what* is averaged: evaluation seeds drawn with
the same weights are not independent samples of a pre-training method, so they are first averaged within
their replicate unit (:func:`unit_means`), and n is the number of units. A t-test needs variance on both
sides; a fixed checkpoint (one unit) or a side whose units all agree gives "no test", never a p-value.
Several p-values of one declared family are Holm-corrected (:func:`holm`, statsmodels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Summary:
    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float


def summarize(values: np.ndarray | list[float], level: float = 0.95) -> Summary:
    """Mean, sample std and t-interval; std and CI are NaN with fewer than two finite values."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Summary(float("nan"), float("nan"), 0, float("nan"), float("nan"))
    mean = float(x.mean())
    if n < 2:
        return Summary(mean, float("nan"), n, float("nan"), float("nan"))
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, df=n - 1)) * std / np.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half)


def replicate_unit(pretrain_seed: float | None, checkpoint: str, seed: int) -> str:
    """The independent replicate a result row belongs to.

    - a pre-training replicate (``pretrain_seed`` set): ``run<S>``;
    - ``random``: the weights are redrawn for every evaluation seed, so each seed is its own unit ``init<S>``;
    - any other fixed checkpoint (ImageNet, raw pixels, a single run): one unit, ``fixed``.
    """
    if pretrain_seed is not None and not pd.isna(pretrain_seed):
        return f"run{int(pretrain_seed)}"
    if str(checkpoint) == "random":
        return f"init{int(seed)}"
    return "fixed"


def unit_means(rows: pd.DataFrame) -> pd.Series:
    """Mean ``value`` per ``unit`` (evaluation draws averaged inside their replicate first)."""
    return rows.groupby("unit", sort=True)["value"].mean()


def no_test_reason(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> str | None:
    """Why a t-test between two sets of unit means is not defined, or None when it is."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        return "no test: a side has fewer than 2 independent replicates"
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return "no test: a side has zero variance across replicates"
    return None


def welch_p(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Two-sided Welch's t-test p-value on unit means; NaN whenever :func:`no_test_reason` gives a reason."""
    if no_test_reason(a, b) is not None:
        return float("nan")
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    return float(stats.ttest_ind(x[np.isfinite(x)], y[np.isfinite(y)], equal_var=False).pvalue)


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm-adjusted p-values of one family (statsmodels ``multipletests``); NaN entries stay NaN and are not
    counted in the family size."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = multipletests(p[finite], method="holm")[1]
    return out
