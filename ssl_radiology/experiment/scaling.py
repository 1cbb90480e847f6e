"""Pre-training scaling: downstream metric vs number of pre-training images, with a fitted power law.

The studies this toolkit reproduces (Cherti & Jitsev 2022, Mustafa et al. 2021) summarise a scaling grid by
the exponent ``b`` of ``metric ≈ a · n_images^b``, fitted as a straight line on log–log axes. Replicates
(pre-training seeds) make the exponent's uncertainty measurable: the confidence interval is a percentile
bootstrap that resamples replicates *within* each data size (the sizes are the design, the seeds the noise).
Without replicates (one run per size) resampling would only reshuffle the design, so the interval is the
classical t-interval of the regression slope instead (needs ≥ 3 points); with two points a line fits
perfectly and no interval is reported (NaN) rather than a meaningless one. ``ci_method`` says which.

To fit an error rate instead of a score (as scaling-law papers often do), pass ``1 - metric`` as the metric.
Torch-free (numpy, scipy, pandas, matplotlib) so reports can import it cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ssl_radiology.errors import UserError

#: columns :func:`plot_scaling` needs (other columns are ignored)
COLUMNS = ("domain", "model", "n_images", "metric")


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through log10 points."""
    fit = stats.linregress(x, y)
    return float(fit.slope), float(fit.intercept)


def fit_power_law(
    n_images: Iterable[float],
    metric: Iterable[float],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, Any]:
    """Fit ``metric = a · n_images^exponent`` on log10–log10 axes, with a bootstrap CI on the exponent.

    Every point enters the fit; several points at one size are replicates (pre-training seeds), which the
    bootstrap resamples within their size. Returns ``a``, ``exponent``, ``ci_low``, ``ci_high``,
    ``ci_method`` (``"bootstrap"``, ``"t"`` without replicates, ``"none"``: NaN bounds), ``r2`` of the
    log–log fit, ``n_points`` and ``n_sizes``.
    """
    n = np.asarray(list(n_images), dtype=np.float64)
    y = np.asarray(list(metric), dtype=np.float64)
    if n.shape != y.shape or n.ndim != 1:
        raise UserError(f"scaling fit: {n.size} image counts for {y.size} metric values")
    if n.size == 0 or (n <= 0).any() or (y <= 0).any() or not np.isfinite(np.r_[n, y]).all():
        raise UserError(
            "scaling fit: image counts and metric values must be positive and finite (a power law is fitted "
            "on log axes; fit an error rate as 1 - metric if the metric can be 0)"
        )
    x, ly = np.log10(n), np.log10(y)
    sizes = np.unique(n)
    result: dict[str, Any] = {"n_points": int(n.size), "n_sizes": int(sizes.size), "ci_method": "none"}
    if sizes.size < 2:
        return {
            **result,
            "a": math.nan,
            "exponent": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
            "r2": math.nan,
        }
    slope, intercept = _line(x, ly)
    residual = ly - (intercept + slope * x)
    total = ((ly - ly.mean()) ** 2).sum()
    r2 = float(1.0 - (residual**2).sum() / total) if total > 0 else 1.0
    low = high = math.nan
    alpha = (1.0 - ci) / 2.0
    groups = [np.flatnonzero(n == size) for size in sizes]
    if any(g.size > 1 for g in groups):
        rng = np.random.default_rng(seed)
        slopes = np.empty(n_boot)
        for b in range(n_boot):
            idx = np.concatenate([rng.choice(g, size=g.size, replace=True) for g in groups])
            slopes[b] = _line(x[idx], ly[idx])[0]
        low, high = (float(q) for q in np.quantile(slopes, [alpha, 1.0 - alpha]))
        result["ci_method"] = "bootstrap"
    elif n.size >= 3:
        half = float(stats.linregress(x, ly).stderr) * float(stats.t.ppf(1.0 - alpha, n.size - 2))
        low, high = slope - half, slope + half
        result["ci_method"] = "t"
    return {**result, "a": float(10**intercept), "exponent": slope, "ci_low": low, "ci_high": high, "r2": r2}


def _frame(rows: pd.DataFrame | Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"scaling plot: rows lack column(s) {', '.join(missing)} (need {', '.join(COLUMNS)})")
    if frame.empty:
        raise UserError("scaling plot: no rows to plot")
    return frame


def plot_scaling(
    rows: pd.DataFrame | Iterable[Mapping[str, Any]],
    out_png: str | Path,
    *,
    metric_label: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Plot downstream metric vs pre-training images (log x), one line per domain × model size.

    ``rows``: a DataFrame or dicts with columns ``domain`` (pre-training source domain), ``model`` (backbone
    / model size), ``n_images`` (pre-training images of the run), ``metric`` (downstream score of the run),
    one row per run (several runs at one size are replicates, e.g. pre-training seeds). Each line shows the
    replicate mean, the min–max spread (band) and the single runs (dots); the dashed line is the fitted power
    law, whose exponent and CI are in the legend. Writes ``out_png`` and returns ``{"<domain> / <model>": fit_power_law(...)}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    frame = _frame(rows)
    fig = Figure(figsize=(9.0, 4.6), constrained_layout=True)
    ax = fig.add_subplot()
    fits: dict[str, dict[str, Any]] = {}
    for (domain, model), group in frame.groupby(["domain", "model"], sort=True):
        label = f"{domain} / {model}"
        fit = fit_power_law(group["n_images"], group["metric"])
        fits[label] = fit
        summary = group.groupby("n_images")["metric"].agg(["mean", "min", "max"]).sort_index()
        (line,) = ax.plot(summary.index, summary["mean"], marker="o", label=label)
        ax.fill_between(summary.index, summary["min"], summary["max"], color=line.get_color(), alpha=0.2)
        ax.scatter(group["n_images"], group["metric"], color=line.get_color(), s=10, alpha=0.6)
        if math.isfinite(fit["exponent"]):
            grid = np.geomspace(summary.index.min(), summary.index.max(), 50)
            ci = f" [{fit['ci_low']:.3f}, {fit['ci_high']:.3f}]" if math.isfinite(fit["ci_low"]) else ""
            ax.plot(
                grid,
                fit["a"] * grid ** fit["exponent"],
                linestyle="--",
                color=line.get_color(),
                label=f"fit: b = {fit['exponent']:.3f}{ci}",
            )
    ax.set_xscale("log")
    ax.set_xlabel("pre-training images")
    ax.set_ylabel(metric_label or "downstream metric")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(
        fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0
    )  # off the data
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return fits
