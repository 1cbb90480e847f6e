"""Patient-level (paired) bootstrap, replicate units and Holm: constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from ssl_radiology.evaluation.bootstrap import (
    Predictions,
    condition_interval,
    paired_difference,
    weighted_metric,
)
from ssl_radiology.evaluation.stats import holm, no_test_reason, replicate_unit, welch_p


def _multiclass(n=60, classes=3, seed=0, patients=None, acc=0.7):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    scores = rng.random((n, classes))
    right = rng.random(n) < acc
    scores[right, labels[right]] += 2
    pats = np.array([f"p{i}" for i in range(n)]) if patients is None else patients
    return Predictions(np.arange(n), pats, labels, scores)


def _multilabel(n=80, labels=3, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.4).astype(float)
    s = np.round(y * 0.3 + rng.random((n, labels)), 1)  # rounding makes ties
    mask = rng.random((n, labels)) > 0.1
    return Predictions(np.arange(n), np.array([f"p{i // 2}" for i in range(n)]), y, s, mask)


def test_weighted_metrics_equal_sklearn_with_sample_weights():
    mc = _multiclass()
    w = np.random.default_rng(1).integers(0, 4, (5, len(mc.sample))).astype(float)
    pred = mc.scores.argmax(1)
    acc = weighted_metric("accuracy", mc, w)
    bal = weighted_metric("balanced_accuracy", mc, w)
    for b in range(len(w)):
        assert acc[b] == pytest.approx(accuracy_score(mc.labels, pred, sample_weight=w[b]))
        assert bal[b] == pytest.approx(balanced_accuracy_score(mc.labels, pred, sample_weight=w[b]))
    ml = _multilabel()
    wl = np.vstack([np.ones(80), np.random.default_rng(2).integers(0, 4, (4, 80))]).astype(float)
    auc = weighted_metric("auroc_mean", ml, wl)
    for b, weights in enumerate(wl):
        ref = [
            roc_auc_score(ml.labels[m, j], ml.scores[m, j], sample_weight=weights[m])
            for j in range(3)
            for m in [ml.mask[:, j] & (weights > 0)]
        ]
        assert auc[b] == pytest.approx(np.mean(ref))


def test_identical_conditions_give_zero_delta_and_p_one():
    mc = _multiclass()
    result = paired_difference("accuracy", [[mc]], [[mc]], n_resamples=500)
    assert result.delta == 0 and result.low == 0 and result.high == 0 and result.p == pytest.approx(1.0)
    ml = _multilabel()
    assert paired_difference("auroc_mean", [[ml], [ml]], [[ml]], n_resamples=300).p == pytest.approx(1.0)


def test_real_difference_is_detected_and_pairing_narrows_the_interval():
    n = 400
    good = _multiclass(n=n, acc=0.9, seed=3)
    worse = Predictions(good.sample, good.patients, good.labels, good.scores.copy())
    flip = np.random.default_rng(4).random(n) < 0.15  # worse is wrong on 15 % more images
    worse.scores[flip] = np.roll(np.eye(3)[good.labels[flip]], 1, axis=1) * 5
    result = paired_difference("accuracy", [[good]], [[worse]], n_resamples=1000)
    assert result.low > 0 and result.p < 0.01
    assert result.delta == pytest.approx(
        weighted_metric("accuracy", good, np.ones((1, n)))[0]
        - weighted_metric("accuracy", worse, np.ones((1, n)))[0]
    )
    wa, wb = (condition_interval("accuracy", [[p]], n_resamples=1000) for p in (good, worse))
    unpaired = np.hypot(wa.high - wa.low, wb.high - wb.low)  # width if the two sides were independent
    assert result.high - result.low < 0.8 * unpaired  # same patients on both sides: their difficulty cancels


def test_patient_bootstrap_wider_than_slice_bootstrap_on_clustered_data():
    """20 patients × 48 near-identical slices: the slice bootstrap pretends there are 960 samples."""
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i}" for i in range(20)], 48)
    labels = np.repeat(rng.integers(0, 2, 20), 48)
    correct = np.repeat(rng.random(20) < 0.6, 48) ^ (rng.random(960) < 0.02)
    scores = np.eye(2)[np.where(correct, labels, 1 - labels)]
    by_patient = Predictions(np.arange(960), patients, labels, scores)
    by_slice = Predictions(np.arange(960), np.arange(960).astype(str), labels, scores)
    wide = condition_interval("accuracy", [[by_patient]], n_resamples=1000)
    narrow = condition_interval("accuracy", [[by_slice]], n_resamples=1000)
    assert wide.estimate == narrow.estimate
    assert (wide.high - wide.low) > 3 * (narrow.high - narrow.low)


def test_runs_resampled_widen_the_interval():
    base = _multiclass(n=300, acc=0.7, seed=5)
    runs = [[_multiclass(n=300, acc=a, seed=5)] for a in (0.5, 0.7, 0.9)]
    one = condition_interval("accuracy", [[base]], n_resamples=800)
    three = condition_interval("accuracy", runs, n_resamples=800)
    assert (three.high - three.low) > (one.high - one.low)


def test_unaligned_predictions_are_refused():
    a, b = _multiclass(n=10), _multiclass(n=12)
    with pytest.raises(ValueError, match="same test images"):
        paired_difference("accuracy", [[a]], [[b]])


def test_holm_on_known_p_values():
    adjusted = holm([0.01, 0.04, 0.03, 0.005, np.nan])
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[4])


def test_replicate_units_and_no_test():
    assert replicate_unit(2.0, "runs/a/seed-2", 0) == "run2"
    assert replicate_unit(None, "random", 3) == "init3"
    assert replicate_unit(float("nan"), "imagenet", 3) == "fixed"
    assert no_test_reason([0.6], [0.5, 0.55]).startswith("no test: a side has fewer than 2")
    assert "zero variance" in no_test_reason([0.6, 0.6, 0.6], [0.5, 0.55, 0.52])
    assert np.isnan(welch_p([0.6, 0.6, 0.6], [0.5, 0.55, 0.52]))
    assert no_test_reason([0.6, 0.62], [0.5, 0.55]) is None
