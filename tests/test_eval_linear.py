"""kNN and linear protocols on synthetic cached features."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_radiology.evaluation.linear import logistic_regression, sgd_linear
from ssl_radiology.features.knn import knn_accuracy, knn_predict, knn_probabilities


def _blobs(n: int, seed: int, dim: int = 16, classes: int = 3):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, (classes, dim))
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(0, 1, (n, dim))).astype(np.float32), y


def test_knn_equals_analysis_implementation():
    x, y = _blobs(120, 0)
    q, qy = _blobs(40, 1)
    probs = knn_probabilities(x, y, q, "multiclass", 3, ks=(10, 20, 500))
    for k in (10, 20):
        assert np.mean(probs[k].argmax(1) == qy) == pytest.approx(knn_accuracy(x, y, q, qy, k=k))
    np.testing.assert_allclose(probs[20], knn_predict(x, y, q, ks=(20,)).probabilities(20))
    np.testing.assert_allclose(probs[500], probs[500].clip(0, 1))  # k above n_train clipped, still valid


def test_knn_class_missing_from_train_gets_zero_column():
    x, y = _blobs(60, 0)
    keep = y != 1
    probs = knn_probabilities(x[keep], y[keep], x[:5], "multiclass", 3, ks=(5,))
    assert probs[5].shape == (5, 3) and (probs[5][:, 1] == 0).all()


def test_linear_protocols_learn_separable_blobs():
    train, val, test = _blobs(150, 0), _blobs(60, 1), _blobs(100, 2)
    t = (*train, None)
    v = (*val, None)
    probs, info = logistic_regression(t, v, t, test[0], "multiclass", 3, cs=[0.01, 1.0], seed=0)
    assert np.mean(probs.argmax(1) == test[1]) > 0.9 and info["chosen_C"] in (0.01, 1.0)
    probs, info = sgd_linear(
        t, v, test[0], "multiclass", 3, base_lrs=[0.1, 10.0], epochs=20, batch_size=32, batchnorm=True, seed=0
    )
    assert np.mean(probs.argmax(1) == test[1]) > 0.9
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


def test_multilabel_logreg_with_masked_and_constant_labels():
    x, y = _blobs(200, 0)
    labels = np.stack([y == 0, y == 2, np.zeros_like(y)], axis=1).astype(np.float32)
    mask = np.ones_like(labels, bool)
    mask[:40, 0] = False
    labels[:40, 0] = 0  # unknown labels are stored as 0 and masked
    probs, _ = logistic_regression(
        (x[:150], labels[:150], mask[:150]), (x[150:], labels[150:], mask[150:]), (x[:150], labels[:150], mask[:150]),
        x, "multilabel", 3, cs=[1.0], seed=0,
    )  # fmt: skip
    assert probs.shape == (200, 3)
    assert ((probs[:, 0] > 0.5) == (y == 0)).mean() > 0.95
    assert np.allclose(probs[:, 2], 0.0)  # a label never positive in training is a constant 0


def test_raw_pixels_features_and_pca_fitted_on_training_rows_only():
    import torch

    from ssl_radiology.errors import UserError
    from ssl_radiology.models import checkpoint_hash, load_backbone
    from ssl_radiology.models.raw_pixels import parse_spec, reduce_features

    model = load_backbone("raw-pixels:4")
    image = torch.arange(64.0).reshape(1, 1, 8, 8)
    features = model(image)
    assert features.shape == (1, 16) and features[0, 0] == pytest.approx(image[0, 0, :2, :2].mean())
    assert checkpoint_hash("raw-pixels") == "raw-pixels-32px-pca96" != checkpoint_hash("raw-pixels:32:0")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 16)).astype(np.float32)
    train = np.arange(20)
    reduced = reduce_features("raw-pixels:4:3", x, train, seed=0)
    x_changed = x.copy()
    x_changed[20:] += 100.0  # test rows moved far away: the PCA must not notice
    again = reduce_features("raw-pixels:4:3", x_changed, train, seed=0)
    assert reduced.shape == (40, 3) and np.allclose(reduced[:20], again[:20], atol=1e-4)
    assert reduce_features("raw-pixels:4:0", x, train, 0) is x and reduce_features("runs/a", x, train, 0) is x
    with pytest.raises(UserError, match="must be integers"):
        parse_spec("raw-pixels:big")
