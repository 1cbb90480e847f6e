"""Weighted kNN (DINO protocol) against a brute-force numpy reference written here."""

import numpy as np
import pytest

from ssl_radiology.features.knn import knn_accuracy, knn_predict, knn_predict_multilabel


def _reference_votes(train_x, train_y, test_x, k, temperature):
    """Brute force: cosine similarities, full argsort, exp(sim/T) summed per class."""
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    b = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    sims = b.astype(np.float64) @ a.T.astype(np.float64)
    k = min(k, len(train_x))
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    classes = np.unique(train_y)
    votes = np.zeros((len(test_x), len(classes)))
    for q in range(len(test_x)):
        for j in order[q]:
            votes[q, np.searchsorted(classes, train_y[j])] += np.exp(sims[q, j] / temperature)
    return classes, votes


@pytest.fixture(scope="module")
def clustered():
    """Three noisy clusters with arbitrary int labels; test set of 37 queries, one label only in train."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 24))
    labels = np.array([-3, 7, 1000, 42])
    train_c = rng.integers(0, 4, size=300)
    test_c = rng.integers(0, 3, size=37)  # label 42 appears only in training
    train_x = (centres[train_c] + 1.2 * rng.normal(size=(300, 24))).astype(np.float32)
    test_x = (centres[test_c] + 1.2 * rng.normal(size=(37, 24))).astype(np.float32)
    return train_x, labels[train_c], test_x, labels[test_c]


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_votes_match_brute_force(clustered, temperature):
    train_x, train_y, test_x, test_y = clustered
    ks = (1, 5, 20, 100)
    votes = knn_predict(train_x, train_y, test_x, ks=ks, temperature=temperature)
    for k in ks:
        classes, expected = _reference_votes(train_x, train_y, test_x, k, temperature)
        np.testing.assert_array_equal(votes.classes, classes)
        np.testing.assert_allclose(votes.scores[k], expected, rtol=1e-4)
        np.testing.assert_array_equal(votes.predict(k), classes[expected.argmax(axis=1)])
        accuracy = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=temperature)
        assert accuracy == pytest.approx(np.mean(classes[expected.argmax(axis=1)] == test_y))
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=20) > 0.6  # the clusters are learnable
    np.testing.assert_allclose(votes.probabilities(20).sum(axis=1), 1.0)


def test_k_larger_than_training_set_is_clipped(clustered):
    train_x, train_y, test_x, _ = clustered
    small_x, small_y = train_x[:12], train_y[:12]
    votes = knn_predict(small_x, small_y, test_x, ks=(5, 50))
    _, everyone = _reference_votes(small_x, small_y, test_x, 12, 0.07)
    np.testing.assert_allclose(votes.scores[50], everyone, rtol=1e-4)
    assert set(votes.scores) == {5, 50}


def test_multilabel_scores_are_weighted_label_means(clustered):
    train_x, _, test_x, _ = clustered
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=(len(train_x), 3))
    scores = knn_predict_multilabel(train_x, labels, test_x, ks=(10, 400))
    for k in (10, 400):
        expected = np.stack(
            [_reference_votes(train_x, labels[:, j], test_x, k, 0.07)[1] for j in range(3)], axis=1
        )  # (q, label, class 0/1)
        np.testing.assert_allclose(scores[k], expected[:, :, 1] / expected.sum(axis=2), rtol=1e-4)
        assert scores[k].shape == (len(test_x), 3)


def test_rejects_bad_input(clustered):
    train_x, train_y, test_x, test_y = clustered
    with pytest.raises(ValueError, match="labels"):
        knn_predict(train_x, train_y[:-1], test_x)
    with pytest.raises(ValueError, match="feature sizes differ"):
        knn_predict(train_x, train_y, test_x[:, :5])
    with pytest.raises(ValueError, match="only 0 and 1"):
        knn_predict_multilabel(train_x, np.full((len(train_x), 2), 0.5), test_x)
    with pytest.raises(ValueError, match="temperature"):
        knn_accuracy(train_x, train_y, test_x, test_y, temperature=0)
