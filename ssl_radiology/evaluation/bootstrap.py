"""Patient-level bootstrap of test metrics: one condition's interval, and paired differences between two.

Why patients, not images: one patient contributes many near-identical slices, so images are not independent
and an image-level bootstrap gives intervals that are far too narrow. Each bootstrap replicate therefore
draws the test *patients* with replacement (a cluster bootstrap); an image counts as often as its patient was
drawn. Why paired: two initialisations are scored on the same test patients, so the same resample is applied
to both sides and patient difficulty cancels out of Δ.

Replication: a condition is a list of *units* (independent pre-training runs; for ``random`` each redrawn
initialisation; a fixed checkpoint is one unit), each holding the evaluation draws (eval seeds) made with it.
A unit's value is the mean over its draws; a condition's value is the mean over its units. When a side has
more than one unit, each replicate also resamples its units with replacement (a two-stage bootstrap), so
the interval covers run-to-run variation as well as the choice of test patients.

Replicates are vectorised: a resample is a vector of patient counts, i.e. integer sample weights, and every
metric below is computed for all weight vectors at once (weighted rank sums for AUROC). With all weights 1
they equal the unweighted metrics in :mod:`metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

#: metrics the bootstrap can recompute from stored scores
BOOTSTRAP_METRICS = ("accuracy", "balanced_accuracy", "auroc_mean")
#: replicates processed at once (bounds memory at CHUNK × test images floats)
CHUNK = 250


@dataclass(frozen=True)
class Predictions:
    """Scores of one evaluation draw on the test images, in a fixed sample order."""

    sample: np.ndarray  # (N,) row index of the image in its task: the key that pairs two conditions
    patients: np.ndarray  # (N,) patient keys (the resampling clusters)
    labels: np.ndarray  # (N,) class index or (N, L) 0/1
    scores: np.ndarray  # (N, C) probabilities
    mask: np.ndarray | None = None  # (N, L) False where a label is unknown

    @property
    def kind(self) -> str:
        return "multilabel" if self.labels.ndim == 2 else "multiclass"


Unit = Sequence[Predictions]  # the evaluation draws of one independent replicate


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class PairedResult:
    """Δ = mean(a) − mean(b) on the same patients, its percentile interval and two-sided bootstrap p."""

    delta: float
    low: float
    high: float
    p: float
    n_a: int
    n_b: int


def weighted_metric(metric: str, pred: Predictions, weights: np.ndarray) -> np.ndarray:
    """``metric`` for each row of ``weights`` (B, N) of per-image weights; NaN where undefined."""
    w = np.asarray(weights, dtype=np.float64)
    if metric == "accuracy":
        correct = (pred.scores.argmax(axis=1) == pred.labels).astype(np.float64)
        return _ratio(w @ correct, w.sum(axis=1))
    if metric == "balanced_accuracy":
        correct = (pred.scores.argmax(axis=1) == pred.labels).astype(np.float64)
        recalls = [
            _ratio(w[:, pred.labels == c] @ correct[pred.labels == c], w[:, pred.labels == c].sum(axis=1))
            for c in np.unique(pred.labels)
        ]
        return _nanmean(np.stack(recalls, axis=1))
    if metric == "auroc_mean":
        if pred.labels.ndim != 2:
            raise ValueError("auroc_mean needs multi-label predictions")
        per_label = []
        for j in range(pred.labels.shape[1]):
            keep = np.ones(len(pred.labels), bool) if pred.mask is None else pred.mask[:, j].astype(bool)
            per_label.append(_weighted_auroc(pred.labels[keep, j], pred.scores[keep, j], w[:, keep]))
        return _nanmean(np.stack(per_label, axis=1))
    raise ValueError(f"no bootstrap for metric '{metric}' (supported: {', '.join(BOOTSTRAP_METRICS)})")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Row means over finite entries; NaN (without a warning) for rows with none."""
    finite = np.isfinite(x)
    return _ratio(np.where(finite, x, 0.0).sum(axis=1), finite.sum(axis=1).astype(np.float64))


def _weighted_auroc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC with integer sample weights (= the Mann-Whitney statistic of the repeated samples), per row of w.

    Scores are grouped into tied levels; per level the weighted positives and negatives are summed, and a
    positive gains the negatives strictly below its level plus half of those tied with it.
    """
    levels, inverse = np.unique(s, return_inverse=True)
    onehot = sparse.csr_matrix((np.ones(len(s)), (np.arange(len(s)), inverse)), shape=(len(s), len(levels)))
    is_pos = np.asarray(y) > 0.5
    pos = np.asarray((w * is_pos) @ onehot)
    neg = np.asarray((w * ~is_pos) @ onehot)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    return _ratio(num, pos.sum(axis=1) * neg.sum(axis=1))


def _check_aligned(units: Sequence[Unit]) -> Predictions:
    draws = [p for unit in units for p in unit]
    if not draws:
        raise ValueError("no predictions to bootstrap")
    ref = draws[0]
    for p in draws[1:]:
        if len(p.sample) != len(ref.sample) or not np.array_equal(p.sample, ref.sample):
            raise ValueError("predictions are not on the same test images; cannot pair them")
    return ref


def _patient_counts(patients: np.ndarray, n_resamples: int, rng: np.random.Generator):
    """(codes (N,), counts (B, P)): how often each patient is drawn in each replicate."""
    _, codes = np.unique(patients, return_inverse=True)
    n = int(codes.max()) + 1
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
    return codes, counts


def _unit_values(metric: str, unit: Unit, weights: np.ndarray) -> np.ndarray:
    """A unit's metric per replicate: the mean over its evaluation draws (the same patient weights)."""
    return np.mean([weighted_metric(metric, pred, weights) for pred in unit], axis=0)


def _side_replicates(
    metric: str, units: Sequence[Unit], codes: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(B,) condition values: unit values under the patient resample, averaged over resampled units."""
    values = np.empty((len(counts), len(units)))
    for start in range(0, len(counts), CHUNK):
        weights = counts[start : start + CHUNK][:, codes]
        values[start : start + CHUNK] = np.stack([_unit_values(metric, u, weights) for u in units], axis=1)
    if len(units) == 1:
        return values[:, 0]
    pick = rng.integers(0, len(units), size=values.shape)
    return _nanmean(np.take_along_axis(values, pick, axis=1))


def _estimate(metric: str, units: Sequence[Unit]) -> float:
    ones = np.ones((1, len(units[0][0].sample)))
    return float(np.mean([_unit_values(metric, u, ones)[0] for u in units]))


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha))


def condition_interval(
    metric: str, units: Sequence[Unit], n_resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """Point estimate and percentile interval of one condition (patients and units resampled)."""
    ref = _check_aligned(units)
    rng = np.random.default_rng(seed)
    codes, counts = _patient_counts(ref.patients, n_resamples, rng)
    low, high = _percentile(_side_replicates(metric, units, codes, counts, rng), level)
    return Interval(_estimate(metric, units), low, high)


def paired_difference(
    metric: str,
    units_a: Sequence[Unit],
    units_b: Sequence[Unit],
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedResult:
    """Paired patient bootstrap of Δ = a − b: both sides see the same patient resample in each replicate.

    The p-value is two-sided, from the bootstrap distribution of Δ: twice the smaller share of replicates
    on either side of 0 (with the +1 correction, so it is never 0), capped at 1. Two identical conditions
    give Δ = 0 in every replicate and p = 1.
    """
    ref = _check_aligned([*units_a, *units_b])
    rng = np.random.default_rng(seed)
    codes, counts = _patient_counts(ref.patients, n_resamples, rng)
    a = _side_replicates(metric, units_a, codes, counts, rng)
    b = _side_replicates(metric, units_b, codes, counts, rng)
    diff = (a - b)[np.isfinite(a - b)]
    delta = _estimate(metric, units_a) - _estimate(metric, units_b)
    if not diff.size:
        return PairedResult(delta, float("nan"), float("nan"), float("nan"), len(units_a), len(units_b))
    low, high = _percentile(diff, level)
    tail = min((diff <= 0).sum(), (diff >= 0).sum())
    p = min(1.0, 2 * (tail + 1) / (diff.size + 1))
    return PairedResult(delta, low, high, float(p), len(units_a), len(units_b))
