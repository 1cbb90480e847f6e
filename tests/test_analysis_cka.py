"""CKA estimators against published values, a Gram-matrix reference, and the invariances CKA must have."""

import numpy as np
import pytest
import scipy.stats
import torch

from ssl_radiology.analysis.cka import (
    MinibatchCKA,
    MultiLayerMinibatchCKA,
    cka_from_grams,
    linear_cka,
    rbf_cka,
)


@pytest.fixture(scope="module")
def kornblith_demo():
    """The example from Kornblith et al.'s CKA demo notebook."""
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    return x, y


def test_published_values(kornblith_demo):
    x, y = kornblith_demo
    assert linear_cka(x, y) == pytest.approx(0.55761, abs=1e-5)
    assert linear_cka(x, y, debiased=True) == pytest.approx(0.51346, abs=1e-5)
    assert rbf_cka(x, y, threshold=0.5) == pytest.approx(0.65483, abs=1e-5)


def _song_hsic1(k: np.ndarray, g: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC, written literally on Gram matrices."""
    n = len(k)
    kt, lt = k.copy(), g.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    one = np.ones(n)
    value = np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    value -= 2 / (n - 2) * (one @ kt @ lt @ one)
    return value / (n * (n - 3))


@pytest.mark.parametrize("n", [6, 17, 40])
def test_feature_space_forms_match_gram_forms(n):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 7)) + 3.0, rng.normal(size=(n, 12)) @ rng.normal(size=(12, 12))
    y[:, :7] += x
    k, g = x @ x.T, y @ y.T  # uncentred on purpose: HSIC₁ ignores translation
    expected = _song_hsic1(k, g) / np.sqrt(_song_hsic1(k, k) * _song_hsic1(g, g))
    assert linear_cka(x, y, debiased=True) == pytest.approx(expected, abs=1e-10)
    assert cka_from_grams(k, g, debiased=True) == pytest.approx(expected, abs=1e-10)
    h = np.eye(n) - 1 / n
    kc, lc = h @ k @ h, h @ g @ h
    biased = np.sum(kc * lc) / np.sqrt(np.sum(kc * kc) * np.sum(lc * lc))
    assert linear_cka(x, y) == pytest.approx(biased, abs=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances_and_self_similarity(debiased):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16))
    y = x @ rng.normal(size=(16, 24)) * 0.5 + rng.normal(size=(200, 24))
    base = linear_cka(x, y, debiased)
    orthogonal = scipy.stats.ortho_group.rvs(24, random_state=1)
    assert linear_cka(x, y @ orthogonal, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(7.5 * x, y, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x + 4.0, y - 9.0, debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)
    assert rbf_cka(
        x @ scipy.stats.ortho_group.rvs(16, random_state=2), 3.0 * y + 1.0, debiased=debiased
    ) == pytest.approx(rbf_cka(x, y, debiased=debiased), abs=1e-10)
    stretch = np.diag(np.geomspace(0.05, 20.0, 24))  # invertible but not orthogonal
    assert abs(linear_cka(x, y @ stretch, debiased) - base) > 0.05


def test_float32_with_large_offset_matches_float64():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 32))
    y = np.tanh(x @ rng.normal(size=(32, 48))) + 0.3 * rng.normal(size=(500, 48))
    x32, y32 = (x + 1e4).astype(np.float32), (y + 1e4).astype(np.float32)
    for debiased in (False, True):
        reference = linear_cka(x32.astype(np.float64), y32.astype(np.float64), debiased)
        assert linear_cka(x32, y32, debiased) == pytest.approx(reference, abs=1e-6)
        assert linear_cka(torch.from_numpy(x32), torch.from_numpy(y32), debiased) == pytest.approx(
            reference, abs=1e-6
        )
        assert abs(reference - linear_cka(x, y, debiased)) < 1e-3  # float32 rounding of +1e4 costs ~1e-3


def test_minibatch_is_unbiased_where_naive_mean_is_not():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2000, 128)), rng.normal(size=(2000, 128))
    streaming = MinibatchCKA()
    per_batch = []
    for start in range(0, 2000, 100):
        xb, yb = x[start : start + 100], y[start : start + 100]
        streaming.update(xb, yb)
        per_batch.append(linear_cka(xb, yb))
    assert abs(streaming.compute()) < 0.05
    assert np.mean(per_batch) > 0.4


def test_minibatch_matches_full_data_debiased_cka_on_dependent_data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 64))
    y = np.maximum(x @ rng.normal(size=(64, 96)), 0) + rng.normal(size=(3000, 96))
    streaming = MinibatchCKA()
    for start in range(0, 3000, 250):
        streaming.update(torch.from_numpy(x[start : start + 250]), y[start : start + 250])
    full = linear_cka(x, y, debiased=True)
    assert 0.2 < full < 0.95
    assert streaming.compute() == pytest.approx(full, abs=0.03)


def test_multilayer_matches_pairwise_and_one_batch_equals_debiased():
    rng = np.random.default_rng(6)
    xs = [rng.normal(size=(64, d)) for d in (5, 9, 13)]
    ys = [xs[0] @ rng.normal(size=(5, 7)), rng.normal(size=(64, 4))]
    layers = MultiLayerMinibatchCKA(3, 2)
    layers.update(xs, ys)
    matrix = layers.compute()
    assert matrix.shape == (3, 2)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            assert matrix[i, j] == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-10)


def test_rejects_bad_input():
    rng = np.random.default_rng(7)
    with pytest.raises(ValueError, match="same number of examples"):
        linear_cka(rng.normal(size=(10, 3)), rng.normal(size=(11, 3)))
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(np.full((10, 3), np.nan), rng.normal(size=(10, 3)))
    with pytest.raises(ValueError, match="at least 4"):
        MinibatchCKA().update(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))
    with pytest.raises(ValueError, match="no batches"):
        MinibatchCKA().compute()
