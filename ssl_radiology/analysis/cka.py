"""Centred kernel alignment (CKA) between two sets of features of the same examples.

Three estimators, for three situations:

* :func:`linear_cka` — all features fit in memory. Uses the feature-space identities
  ``tr(KL) = ‖XᵀY‖²_F`` for linear kernels ``K = XXᵀ``, ``L = YYᵀ``, so the cost is ``O(n d²)`` time and
  ``O(d²)`` memory and never an ``n × n`` Gram matrix (50 000 examples would need 20 GB per Gram).
* :func:`rbf_cka` — a Gaussian kernel has no feature-space form, so it builds the two ``n × n`` Grams in
  float64: ``8 n²`` bytes each, i.e. n ≲ 10 000 on a laptop (0.8 GB per Gram), n ≲ 30 000 on a large node.
* :class:`MinibatchCKA` / :class:`MultiLayerMinibatchCKA` — activations streamed batch by batch (layer-wise
  CKA over a DataLoader). Nguyen, Raghu & Kornblith (2021): sum the *unbiased* HSIC of every batch for XY,
  XX and YY and normalise once at the end. Averaging per-batch CKA instead is biased towards 1 on
  independent data because every small-batch biased HSIC is dominated by its own noise.

All arithmetic runs in float64 *after* converting the inputs: features with a large common offset (for
example +1e4) lose their informative low bits if centred in float32.

The debiased estimator is the unbiased HSIC of Song et al. (2012), with ``K̃``/``L̃`` the Grams with zeroed
diagonal::

    HSIC₁(K, L) = [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n-1)(n-2)) − 2/(n-2) · 1ᵀK̃L̃1] / (n (n-3))

For linear kernels every term has a feature-space form (``a_i = ‖x_i‖²``, ``s = Σ_i x_i``)::

    tr(K̃L̃)   = ‖XᵀY‖²_F − Σ_i a_i b_i
    1ᵀK̃1     = ‖s_x‖² − Σ_i a_i
    1ᵀK̃L̃1    = (X s_x − a) · (Y s_y − b)

HSIC₁ is unchanged by translating the features, so centring first only serves accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(features: ArrayLike, name: str) -> np.ndarray:
    """A private 2-D float64 copy (torch tensors are detached and moved to the CPU) that may be centred in place."""
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    array = np.array(features, dtype=np.float64, copy=True)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (examples × features), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _paired(x: ArrayLike, y: ArrayLike, minimum: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 copies of two feature matrices that describe the same ``n ≥ minimum`` examples."""
    x64, y64 = _as_float64(x, "X"), _as_float64(y, "Y")
    if x64.shape[0] != y64.shape[0]:
        raise ValueError(
            f"X and Y must have the same number of examples, got {x64.shape[0]} and {y64.shape[0]}"
        )
    if x64.shape[0] < minimum:
        raise ValueError(f"need at least {minimum} examples, got {x64.shape[0]}")
    return x64, y64


def _centre(features: np.ndarray) -> np.ndarray:
    """Subtract the column means in place (callers own the float64 copy) and return the array."""
    features -= features.mean(axis=0, keepdims=True)
    return features


def _hsic1_linear(x: np.ndarray, y: np.ndarray, cross: float, a: np.ndarray, b: np.ndarray, n: int) -> float:
    """Unbiased HSIC of linear kernels from feature-space terms; ``cross`` is ``‖XᵀY‖²_F``."""
    s_x, s_y = x.sum(axis=0), y.sum(axis=0)
    trace = cross - float(a @ b)
    sum_k, sum_l = float(s_x @ s_x) - a.sum(), float(s_y @ s_y) - b.sum()
    row_k, row_l = x @ s_x - a, y @ s_y - b
    value = trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(row_k @ row_l)
    return value / (n * (n - 3))


def linear_cka(x: ArrayLike, y: ArrayLike, debiased: bool = False) -> float:
    """Linear CKA ``‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)`` of centred features, without any ``n × n`` matrix.

    ``x`` is (n, d₁), ``y`` is (n, d₂), rows are the same examples. ``debiased=True`` replaces each HSIC
    by Song et al.'s unbiased estimator (needs n ≥ 4), which removes the upward bias of CKA when d ≳ n.
    """
    x64, y64 = _paired(x, y, minimum=4 if debiased else 2)
    _centre(x64)
    _centre(y64)
    cross = float(np.sum((x64.T @ y64) ** 2))
    self_x = float(np.sum((x64.T @ x64) ** 2))
    self_y = float(np.sum((y64.T @ y64) ** 2))
    if debiased:
        n = x64.shape[0]
        a, b = np.einsum("ij,ij->i", x64, x64), np.einsum("ij,ij->i", y64, y64)
        cross = _hsic1_linear(x64, y64, cross, a, b, n)
        self_x = _hsic1_linear(x64, x64, self_x, a, a, n)
        self_y = _hsic1_linear(y64, y64, self_y, b, b, n)
    return _normalise(cross, self_x, self_y)


def _normalise(cross: float, self_x: float, self_y: float) -> float:
    """CKA from HSIC(X,Y), HSIC(X,X), HSIC(Y,Y); NaN when a representation is constant."""
    denominator = np.sqrt(self_x * self_y) if self_x > 0 and self_y > 0 else 0.0
    return float(cross / denominator) if denominator > 0 else float("nan")


def rbf_gram(x: ArrayLike, threshold: float = 1.0) -> np.ndarray:
    """Gaussian Gram ``exp(-‖x_i − x_j‖² / (2σ²))`` with ``σ² = threshold² × median squared distance``.

    The median runs over the full ``n × n`` distance matrix, zero diagonal included — Kornblith et al.'s
    (2019) convention, kept so that published RBF-CKA values are reproducible.
    """
    x = _centre(_as_float64(x, "features"))
    sq_norms = np.einsum("ij,ij->i", x, x)
    sq_dist = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T), 0.0)
    median = float(np.median(sq_dist))
    if median == 0.0:
        raise ValueError("RBF CKA needs at least half the pairwise distances to be non-zero")
    return np.exp(-sq_dist / (2.0 * threshold**2 * median))


def centre_gram(gram: np.ndarray, unbiased: bool = False) -> np.ndarray:
    """Centre a Gram matrix so that ``<centre(K), centre(L)>`` is (proportional to) HSIC.

    Biased: ``HKH`` with ``H = I − 11ᵀ/n``. Unbiased: zero the diagonal and subtract adjusted row/column
    means so that ``<K', L'> / (n(n−3))`` equals Song et al.'s HSIC₁ (the form that lets minibatch CKA
    compare many layers with one matrix product).
    """
    gram = np.array(gram, dtype=np.float64, copy=True)
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0.0)
        means = gram.sum(axis=0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0.0)
        return gram
    means = gram.mean(axis=0)
    return gram - means[:, None] - means[None, :] + means.mean()


def cka_from_grams(gram_x: np.ndarray, gram_y: np.ndarray, debiased: bool = False) -> float:
    """CKA of two ``n × n`` Gram matrices (any kernel)."""
    kc, lc = centre_gram(gram_x, debiased), centre_gram(gram_y, debiased)
    return _normalise(float(np.vdot(kc, lc)), float(np.vdot(kc, kc)), float(np.vdot(lc, lc)))


def rbf_cka(x: ArrayLike, y: ArrayLike, threshold: float = 1.0, debiased: bool = False) -> float:
    """CKA with Gaussian kernels (bandwidth rule in :func:`rbf_gram`).

    Builds two ``n × n`` float64 Grams (``16 n²`` bytes plus temporaries): keep n ≲ 10 000, or subsample.
    """
    x64, y64 = _paired(x, y, minimum=4 if debiased else 2)
    return cka_from_grams(rbf_gram(x64, threshold), rbf_gram(y64, threshold), debiased)


class MultiLayerMinibatchCKA:
    """Streaming unbiased CKA between every layer of one network and every layer of another.

    Each :meth:`update` takes one batch of activations per layer (same examples in the same order for all
    layers, batch size ≥ 4), turns each into an unbiased-centred linear Gram of size batch², and adds
    ``HSIC₁`` for all layer pairs with a single matrix product. :meth:`compute` returns the
    ``len(x) × len(y)`` matrix ``Σ_b HSIC₁(X_i, Y_j) / sqrt(Σ_b HSIC₁(X_i, X_i) · Σ_b HSIC₁(Y_j, Y_j))``.
    Memory is ``O(layers × batch²)``, independent of the dataset size.
    """

    def __init__(self, n_layers_x: int, n_layers_y: int) -> None:
        if n_layers_x < 1 or n_layers_y < 1:
            raise ValueError("need at least one layer on each side")
        self.n_layers_x, self.n_layers_y = n_layers_x, n_layers_y
        self.reset()

    def reset(self) -> None:
        """Forget all accumulated batches."""
        self._xy = np.zeros((self.n_layers_x, self.n_layers_y))
        self._xx = np.zeros(self.n_layers_x)
        self._yy = np.zeros(self.n_layers_y)
        self.n_batches = 0
        self.n_examples = 0

    @staticmethod
    def _centred_grams(layers: Sequence[ArrayLike], expected: int, side: str) -> np.ndarray:
        if len(layers) != expected:
            raise ValueError(f"expected {expected} layer activations for {side}, got {len(layers)}")
        grams = []
        for i, layer in enumerate(layers):
            features = _centre(_as_float64(layer, f"{side}[{i}]"))
            grams.append(centre_gram(features @ features.T, unbiased=True).ravel())
        return np.stack(grams)

    def update(self, x_layers: Sequence[ArrayLike], y_layers: Sequence[ArrayLike]) -> None:
        """Add one batch: ``x_layers[i]`` is (B, d_i) for layer i of X, ``y_layers[j]`` is (B, d_j)."""
        sizes = {int(a.shape[0]) for a in (*x_layers, *y_layers)}
        if len(sizes) != 1:
            raise ValueError(
                f"all activations of one batch must have the same batch size, got {sorted(sizes)}"
            )
        n = sizes.pop()
        if n < 4:
            raise ValueError(f"unbiased minibatch CKA needs batches of at least 4 examples, got {n}")
        grams_x = self._centred_grams(x_layers, self.n_layers_x, "X")
        grams_y = self._centred_grams(y_layers, self.n_layers_y, "Y")
        scale = 1.0 / (n * (n - 3))
        self._xy += scale * (grams_x @ grams_y.T)
        self._xx += scale * np.einsum("ij,ij->i", grams_x, grams_x)
        self._yy += scale * np.einsum("ij,ij->i", grams_y, grams_y)
        self.n_batches += 1
        self.n_examples += n

    def compute(self) -> np.ndarray:
        """The ``layers_x × layers_y`` CKA matrix over all batches seen so far."""
        if self.n_batches == 0:
            raise ValueError("no batches: call update() before compute()")
        with np.errstate(invalid="ignore", divide="ignore"):
            denominator = np.sqrt(np.outer(np.clip(self._xx, 0, None), np.clip(self._yy, 0, None)))
            return np.where(denominator > 0, self._xy / denominator, np.nan)


class MinibatchCKA:
    """Unbiased minibatch linear CKA for one pair of representations (Nguyen, Raghu & Kornblith 2021)."""

    def __init__(self) -> None:
        self._layers = MultiLayerMinibatchCKA(1, 1)

    def update(self, x_batch: ArrayLike, y_batch: ArrayLike) -> None:
        """Add one batch of paired features, (B, d₁) and (B, d₂) with B ≥ 4."""
        self._layers.update([x_batch], [y_batch])

    def compute(self) -> float:
        """CKA accumulated over all batches so far."""
        return float(self._layers.compute()[0, 0])
