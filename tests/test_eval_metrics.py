"""Metrics and statistics of the evaluation against independent references (sklearn / scipy / by hand)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score

from ssl_radiology.evaluation.metrics import (
    auroc_per_label,
    bootstrap_auroc_ci,
    classification_metrics,
    expected_calibration_error,
    validation_loss,
)
from ssl_radiology.evaluation.stats import summarize, welch_p


def test_multiclass_metrics_by_hand():
    labels = np.array([0, 0, 0, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    m = classification_metrics("multiclass", labels, probs, ["a", "b"])
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    # bins of width 1/15: 0.9 right, 0.8 right, 0.7 wrong, 0.6 right -> |1-.9|+|1-.8|+|0-.7|+|1-.6| over 4
    assert m["ece"] == pytest.approx((0.1 + 0.2 + 0.7 + 0.4) / 4)


def test_ece_perfectly_calibrated_is_zero_and_bins_group():
    conf = np.array([0.75, 0.75, 0.75, 0.75])
    assert expected_calibration_error(conf, np.array([1, 1, 1, 0])) == pytest.approx(0.0)
    assert expected_calibration_error(conf, np.array([1, 1, 1, 1])) == pytest.approx(0.25)


def test_multilabel_auroc_matches_sklearn_and_respects_mask():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 3)) < 0.4).astype(float)
    scores = labels * 0.5 + rng.random((200, 3))
    per_label = auroc_per_label(labels, scores)
    expected = [roc_auc_score(labels[:, j], scores[:, j]) for j in range(3)]
    np.testing.assert_allclose(per_label, expected)
    mask = np.ones_like(labels, bool)
    mask[:50, 1] = False
    masked = auroc_per_label(labels, scores, mask)
    assert masked[1] == pytest.approx(roc_auc_score(labels[50:, 1], scores[50:, 1]))
    m = classification_metrics("multilabel", labels, scores.clip(0, 1), ["a", "b", "c"], bootstrap=200)
    assert m["auroc_mean_ci_low"] < m["auroc_mean"] < m["auroc_mean_ci_high"]
    assert set(m) >= {"auroc/a", "auroc/b", "auroc/c", "ece"}


def test_auroc_undefined_for_single_class_is_nan():
    labels = np.array([[0.0], [0.0], [0.0]])
    assert np.isnan(auroc_per_label(labels, np.array([[0.1], [0.2], [0.3]]))[0])


def test_bootstrap_ci_seeded_and_equal_to_loop_reference_over_patients():
    rng = np.random.default_rng(1)
    y = (rng.random(150) < 0.5).astype(float)
    s = y + rng.normal(0, 1.0, 150)
    patients = np.array([f"p{i // 3:03d}" for i in range(150)])  # 50 patients, 3 images each
    a = bootstrap_auroc_ci(y, s, n_resamples=300, seed=3, patients=patients)
    assert a == bootstrap_auroc_ci(y, s, n_resamples=300, seed=3, patients=patients)
    # the same patient resamples scored one by one with sklearn (patient counts as sample weights)
    counts = np.random.default_rng(3).multinomial(50, np.full(50, 1 / 50), size=300)
    codes = np.arange(150) // 3
    ref = np.array([roc_auc_score(y, s, sample_weight=c[codes]) for c in counts])
    assert a == pytest.approx((np.quantile(ref, 0.025), np.quantile(ref, 0.975)))
    per_image = bootstrap_auroc_ci(y, s, n_resamples=300, seed=3)
    assert per_image != a and all(np.isfinite(per_image))


def test_validation_loss_masked_bce():
    y = np.array([[1.0, 0.0]])
    p = np.array([[0.5, 0.9]])
    assert validation_loss("multilabel", y, p, np.array([[True, False]])) == pytest.approx(np.log(2))
    assert validation_loss("multiclass", np.array([1]), np.array([[0.75, 0.25]])) == pytest.approx(np.log(4))


def test_summary_and_welch_match_scipy():
    a = [0.81, 0.83, 0.80, 0.84]
    b = [0.78, 0.79, 0.77, 0.80]
    s = summarize(a)
    assert s.mean == pytest.approx(np.mean(a))
    assert s.std == pytest.approx(np.std(a, ddof=1))
    low, high = scipy_stats.t.interval(0.95, df=3, loc=np.mean(a), scale=scipy_stats.sem(a))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))
    assert welch_p(a, b) == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
    one = summarize([0.5])
    assert one.n == 1 and np.isnan(one.std) and np.isnan(welch_p([0.5], b))


def test_welch_is_undefined_when_a_side_does_not_vary():
    # kNN of two fixed checkpoints on all data: the same value for every seed is not evidence of anything
    assert np.isnan(welch_p([0.66, 0.66, 0.66], [0.62, 0.62, 0.62]))
    # nor is one constant side against a varying one: that would be a one-sample test against a constant
    assert np.isnan(welch_p([0.66, 0.66, 0.66], [0.60, 0.62, 0.61]))
