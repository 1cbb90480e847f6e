"""Classification metrics for the transfer protocols.

Multi-class tasks report accuracy and balanced accuracy (class imbalance is the rule in radiology, so plain
accuracy alone flatters a majority-class predictor); multi-label tasks report per-label and mean AUROC, the
metric the chest X-ray literature compares on. Every task also reports expected calibration error, and AUROC
gets a seeded bootstrap 95 % interval that resamples patients when their keys are given. Label masks (CheXpert "ignore" policy) drop entries from a label's
AUROC instead of counting them as negatives.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from ssl_radiology.evaluation.bootstrap import Predictions, condition_interval


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| × bin share."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if confidence.size == 0:
        return float("nan")
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / confidence.size)


def auroc_per_label(labels: np.ndarray, scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """AUROC of each label column; NaN where the (unmasked) column lacks positives or negatives."""
    labels = np.asarray(labels)
    out = np.full(labels.shape[1], np.nan)
    for j in range(labels.shape[1]):
        keep = np.ones(len(labels), bool) if mask is None else np.asarray(mask[:, j], bool)
        y = labels[keep, j]
        if 0 < y.sum() < len(y):
            out[j] = roc_auc_score(y, scores[keep, j])
    return out


def bootstrap_auroc_ci(
    labels: np.ndarray,
    scores: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    patients: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean AUROC over label columns, resampling *patients*.

    All images of a drawn patient enter the replicate, as often as the patient was drawn (a cluster
    bootstrap: slices of one patient are not independent). Without ``patients`` each image is its own
    cluster. Vectorised weighted rank sums (``bootstrap.weighted_metric``); a label with one class in a
    replicate is left out of that replicate's mean.
    """
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim == 1:
        labels, scores = labels[:, None], scores[:, None]
        mask = None if mask is None else np.asarray(mask)[:, None]
    clusters = np.arange(len(labels)) if patients is None else np.asarray(patients)
    pred = Predictions(np.arange(len(labels)), clusters, labels, scores, mask)
    interval = condition_interval("auroc_mean", [[pred]], n_resamples, seed, level)
    return interval.low, interval.high


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and ECE from class probabilities (N, C)."""
    pred = probs.argmax(axis=1)
    correct = pred == labels
    return {
        "accuracy": float(correct.mean()),
        "balanced_accuracy": float(balanced_accuracy_score(labels, pred)) if len(labels) else float("nan"),
        "ece": expected_calibration_error(probs.max(axis=1), correct),
    }


def multilabel_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    mask: np.ndarray | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    patients: np.ndarray | None = None,
) -> dict[str, float]:
    """Per-label and mean AUROC (+ patient-bootstrap CI) and ECE over all (unmasked) label decisions."""
    per_label = auroc_per_label(labels, probs, mask)
    out = {f"auroc/{name}": float(v) for name, v in zip(class_names, per_label, strict=True)}
    out["auroc_mean"] = float(np.nanmean(per_label)) if np.isfinite(per_label).any() else float("nan")
    if bootstrap > 0:
        low, high = (
            bootstrap_auroc_ci(labels, probs, bootstrap, seed, patients=patients, mask=mask)
            if np.isfinite(per_label).any()
            else (np.nan,) * 2
        )
        out["auroc_mean_ci_low"], out["auroc_mean_ci_high"] = float(low), float(high)
    keep = np.ones_like(labels, bool) if mask is None else np.asarray(mask, bool)
    confidence = np.where(probs >= 0.5, probs, 1 - probs)[keep]
    correct = ((probs >= 0.5) == (labels > 0.5))[keep]
    out["ece"] = expected_calibration_error(confidence, correct)
    return out


def classification_metrics(
    kind: str,
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: list[str],
    mask: np.ndarray | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    patients: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of one task kind ("multiclass" | "multilabel") for one evaluation set; ``patients``
    (one key per image) makes the AUROC interval a patient-level bootstrap."""
    if kind == "multiclass":
        return multiclass_metrics(labels, probs)
    return multilabel_metrics(labels, probs, class_names, mask, bootstrap, seed, patients)


def validation_loss(
    kind: str, labels: np.ndarray, probs: np.ndarray, mask: np.ndarray | None = None
) -> float:
    """Model-selection loss: cross-entropy (multiclass) or mean masked binary cross-entropy (multilabel) of probabilities."""
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    if kind == "multiclass":
        return float(-np.log(p[np.arange(len(labels)), labels]).mean())
    bce = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    keep = np.ones_like(bce, bool) if mask is None else np.asarray(mask, bool)
    return float(bce[keep].mean())


def primary_metric(kind: str) -> str:
    """The headline metric of a task kind, used for model selection and plots."""
    return "accuracy" if kind == "multiclass" else "auroc_mean"
