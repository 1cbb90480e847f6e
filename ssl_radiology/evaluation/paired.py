"""From result rows to bootstrap inputs: replicate units, stored test predictions, paired comparisons.

``compare`` and the experiment report both ask the same two questions of a table cell (protocol × task ×
subset × metric): how precise is one condition's value (patients and pre-training runs resampled), and how
large is the difference between two conditions on the same test patients. This module answers them from
the rows :func:`ssl_radiology.evaluation.results.load_results` returns, reading each seed's ``.npz`` once.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ssl_radiology.evaluation.bootstrap import (
    BOOTSTRAP_METRICS,
    Interval,
    PairedResult,
    Predictions,
    Unit,
    condition_interval,
    paired_difference,
)
from ssl_radiology.evaluation.results import read_predictions
from ssl_radiology.evaluation.stats import replicate_unit

#: worst first: the status a condition shows when its replicates disagree
HEALTH_ORDER = ("collapsed", "plateau", "unknown", "ok")


def add_units(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows with a ``unit`` column: the independent replicate each belongs to (see ``stats.replicate_unit``)."""
    pretrain = rows["pretrain_seed"] if "pretrain_seed" in rows else pd.Series(np.nan, index=rows.index)
    units = [
        replicate_unit(p, c, s) for p, c, s in zip(pretrain, rows["checkpoint"], rows["seed"], strict=True)
    ]
    return rows.assign(unit=units)


def worst_health(values: pd.Series) -> str:
    """One health word for a condition: the worst status any of its pre-training runs reported."""
    seen = {str(v) for v in values.dropna() if str(v)}
    if not seen:
        return ""
    return next((h for h in HEALTH_ORDER if h in seen), sorted(seen)[0])


class PredictionCache:
    """Stored test predictions, read once per (file, protocol)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Predictions] = {}

    def get(self, path: str, protocol: str) -> Predictions:
        key = (path, protocol)
        if key not in self._cache:
            self._cache[key] = read_predictions(path, protocol)
        return self._cache[key]

    def units(self, rows: pd.DataFrame) -> list[Unit] | None:
        """The bootstrap units of one condition in one cell (one row per seed), or None when any seed lacks
        stored predictions (results written before predictions were stored)."""
        if rows.empty or rows["predictions"].isna().any():
            return None
        return [
            [self.get(str(r.predictions), str(r.protocol)) for r in group.itertuples()]
            for _, group in rows.groupby("unit", sort=True)
        ]


def _bootstrappable(metric: str, n_resamples: int) -> bool:
    return n_resamples > 0 and metric in BOOTSTRAP_METRICS


def condition_ci(
    rows: pd.DataFrame, metric: str, cache: PredictionCache, n_resamples: int, seed: int = 0
) -> Interval | None:
    """Patient (and run) bootstrap interval of one condition in one cell; None when it cannot be computed."""
    if not _bootstrappable(metric, n_resamples):
        return None
    units = cache.units(rows)
    if units is None:
        return None
    return condition_interval(metric, units, n_resamples, seed)


def compare_pair(
    rows_a: pd.DataFrame,
    rows_b: pd.DataFrame,
    metric: str,
    cache: PredictionCache,
    n_resamples: int,
    seed: int = 0,
) -> PairedResult | None:
    """Paired patient bootstrap of a − b in one cell; None without predictions or on different test images."""
    if not _bootstrappable(metric, n_resamples):
        return None
    units_a, units_b = cache.units(rows_a), cache.units(rows_b)
    if units_a is None or units_b is None:
        return None
    try:
        return paired_difference(metric, units_a, units_b, n_resamples, seed)
    except ValueError:
        return None
