"""Statistics over seeds: the numbers a paper table needs.

Follows DESIGN.md §4: mean ± sample standard deviation (ddof=1), a 95 % confidence interval of the mean from
the t-distribution (few seeds, so not the normal approximation), and Welch's t-test between two conditions
(unequal variances, as in Jonske et al.).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def welch_p(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Two-sided Welch's t-test p-value; NaN when either side has fewer than two values or neither varies."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size < 2 or y.size < 2:
        return float("nan")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        # Both conditions gave the same value for every seed (e.g. kNN of a fixed checkpoint on all data):
        # the seeds are not independent samples, so there is nothing to test; t would be infinite.
        return float("nan")
    return float(stats.ttest_ind(x, y, equal_var=False).pvalue)
