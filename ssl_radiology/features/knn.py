"""Weighted k-nearest-neighbour classification on frozen features (the DINO protocol).

One implementation serves evaluation (multi-k reporting, AUROC from vote scores: :func:`knn_probabilities`)
and analysis (domain purity, UMAP graphs, per-layer kNN): features are L2-normalised, neighbours come from an *exact* inner-product search
(``faiss.IndexFlatIP``; approximate indexes would make accuracies depend on index parameters), and the k
nearest training examples vote with weight ``exp(cosine / T)``.

Rules that the published protocol leaves open, fixed here:

* ``k`` larger than the training set is clipped to ``n_train`` (every training example votes); results
  stay keyed by the *requested* k so callers can index them with what they asked for.
* Classes are the sorted unique training labels (any ints); a test label absent from training can never
  be predicted and so counts as an error. Ties between classes go to the smallest label.
* faiss uses OpenMP; pass ``num_threads`` to bound it (e.g. to the cores a DataLoader is not using). The
  previous thread count is restored afterwards. faiss is imported on first use, so importing this module
  (e.g. for ``ssl-rad knn --help``) costs only numpy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

DEFAULT_KS = (10, 20, 100, 200)


@contextmanager
def faiss_threads(num_threads: int | None) -> Iterator[None]:
    """Run a block with faiss limited to ``num_threads`` OpenMP threads (None: leave faiss's setting)."""
    if num_threads is None:
        yield
        return
    if num_threads < 1:
        raise ValueError(f"num_threads must be ≥ 1, got {num_threads}")
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(num_threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def normalised(features: np.ndarray, name: str) -> np.ndarray:
    """A C-contiguous float32 copy with unit-length rows (all-zero rows stay zero)."""
    array = np.array(features, dtype=np.float32, order="C", copy=True)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (examples × features), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values")
    import faiss

    faiss.normalize_L2(array)
    return array


def cosine_search(
    bank: np.ndarray, queries: np.ndarray, k: int, num_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k cosine neighbours of each query in ``bank``: (similarities, indices), both (n_q, k)."""
    bank_n, query_n = normalised(bank, "bank features"), normalised(queries, "query features")
    if bank_n.shape[1] != query_n.shape[1]:
        raise ValueError(f"feature sizes differ: bank has {bank_n.shape[1]}, queries have {query_n.shape[1]}")
    if not 1 <= k <= bank_n.shape[0]:
        raise ValueError(f"k must be between 1 and the bank size {bank_n.shape[0]}, got {k}")
    import faiss

    index = faiss.IndexFlatIP(bank_n.shape[1])
    with faiss_threads(num_threads):
        index.add(bank_n)
        similarities, indices = index.search(query_n, k)
    return similarities, indices


@dataclass(frozen=True)
class KnnVotes:
    """Vote scores of a weighted kNN for several k.

    ``classes``: sorted unique training labels; ``scores[k]``: (n_test, n_classes) summed
    ``exp(sim / T)`` weights per class for the requested k (divide by the row sum for probabilities).
    """

    classes: np.ndarray
    scores: dict[int, np.ndarray]

    def predict(self, k: int) -> np.ndarray:
        """Predicted labels for k (highest vote; ties → smallest label)."""
        return self.classes[np.argmax(self.scores[k], axis=1)]

    def probabilities(self, k: int) -> np.ndarray:
        """Votes normalised to sum to 1 per test example, e.g. for AUROC."""
        votes = self.scores[k]
        return votes / votes.sum(axis=1, keepdims=True)


def _check_ks(ks: Iterable[int], n_train: int) -> tuple[list[int], int]:
    requested = sorted({int(k) for k in ks})
    if not requested or requested[0] < 1:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    return requested, min(requested[-1], n_train)


def _check_rows(train_x: np.ndarray, train_labels: np.ndarray, test_x: np.ndarray) -> None:
    if len(train_labels) != len(train_x):
        raise ValueError(f"{len(train_x)} training features but {len(train_labels)} training labels")
    if len(train_x) == 0 or len(test_x) == 0:
        raise ValueError("kNN needs at least one training and one test example")


def _weights(similarities: np.ndarray, temperature: float) -> np.ndarray:
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return np.exp(similarities.astype(np.float64) / temperature)


def knn_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_threads: int | None = None,
) -> KnnVotes:
    """Per-class weighted votes for every k in ``ks`` from a single search at ``max(ks)``."""
    train_y = np.asarray(train_y)
    if train_y.ndim != 1:
        raise ValueError(f"train_y must be 1-D class labels, got shape {train_y.shape}")
    _check_rows(train_x, train_y, test_x)
    requested, k_max = _check_ks(ks, len(train_x))
    similarities, indices = cosine_search(train_x, test_x, k_max, num_threads)
    weights = _weights(similarities, temperature)
    classes, class_of_train = np.unique(train_y, return_inverse=True)
    neighbour_class = class_of_train[indices]
    n_test, n_classes = len(indices), len(classes)
    rows = np.arange(n_test)[:, None] * n_classes
    scores = {}
    for k in requested:
        used = min(k, k_max)
        flat = (rows + neighbour_class[:, :used]).ravel()
        votes = np.bincount(flat, weights=weights[:, :used].ravel(), minlength=n_test * n_classes)
        scores[k] = votes.reshape(n_test, n_classes)
    return KnnVotes(classes=classes, scores=scores)


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    num_threads: int | None = None,
) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of the weighted kNN classifier."""
    test_y = np.asarray(test_y)
    if len(test_y) != len(test_x):
        raise ValueError(f"{len(test_x)} test features but {len(test_y)} test labels")
    votes = knn_predict(train_x, train_y, test_x, ks=(k,), temperature=temperature, num_threads=num_threads)
    return float(np.mean(votes.predict(k) == test_y))


def knn_predict_multilabel(
    train_x: np.ndarray,
    train_labels: np.ndarray,
    test_x: np.ndarray,
    ks: Iterable[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_threads: int | None = None,
    train_mask: np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    """Multi-label kNN (e.g. chest X-ray findings): per label, the weighted mean of neighbours' 0/1 labels.

    ``train_labels`` is (n_train, L) of 0/1; returns ``{k: (n_test, L) scores in [0, 1]}`` usable directly
    as per-label AUROC scores. ``train_mask`` (n_train, L), False where a label is unknown (uncertain-label
    policy "ignore"): such neighbours cast no vote for that label; with no known neighbour among the k the
    score is the label's prevalence among the known training labels.
    """
    labels = np.asarray(train_labels)
    if labels.ndim != 2:
        raise ValueError(f"train_labels must be (n_train, n_labels), got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("train_labels must contain only 0 and 1 (map uncertain labels before calling)")
    _check_rows(train_x, labels, test_x)
    requested, k_max = _check_ks(ks, len(train_x))
    similarities, indices = cosine_search(train_x, test_x, k_max, num_threads)
    weights = _weights(similarities, temperature)
    known = np.ones(labels.shape) if train_mask is None else np.asarray(train_mask, np.float64)
    if known.shape != labels.shape:
        raise ValueError(f"train_mask has shape {known.shape}, train_labels {labels.shape}")
    prior = (labels * known).sum(axis=0) / np.maximum(known.sum(axis=0), 1)
    neighbour_labels = (labels * known).astype(np.float64)[indices]  # (n_test, k_max, L)
    neighbour_known = known[indices]
    scores = {}
    for k in requested:
        used = min(k, k_max)
        w = weights[:, :used]
        votes = np.einsum("qk,qkl->ql", w, neighbour_labels[:, :used])
        weight = np.einsum("qk,qkl->ql", w, neighbour_known[:, :used])
        scores[k] = np.where(weight > 0, votes / np.where(weight > 0, weight, 1), prior)
    return scores


def knn_probabilities(
    train_x: np.ndarray,
    train_y: np.ndarray,
    query_x: np.ndarray,
    kind: str,
    n_classes: int,
    ks: Iterable[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_threads: int | None = None,
    train_mask: np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    """``{k: (n_query, n_classes) scores}`` over *all* task classes, for every requested k.

    Multi-class: vote probabilities, with a class absent from a small training subset getting probability 0
    instead of shifting the columns, so the shared metrics apply. Multi-label (``kind="multilabel"``): the
    per-label weighted neighbour mean over the neighbours whose label is known (``train_mask``).
    """
    ks = tuple(ks)
    if kind == "multilabel":
        return knn_predict_multilabel(train_x, train_y, query_x, ks, temperature, num_threads, train_mask)
    votes = knn_predict(train_x, train_y, query_x, ks, temperature, num_threads)
    out = {}
    for k in ks:
        probs = np.zeros((len(query_x), n_classes))
        probs[:, votes.classes] = votes.probabilities(k)
        out[k] = probs
    return out
