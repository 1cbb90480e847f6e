"""kNN evaluation (DINO protocol) on cached features, through the one implementation in
``ssl_radiology.analysis.knn`` (faiss exact cosine search, ``exp(sim / T)`` votes).

This module only turns votes into class probabilities over *all* task classes (a class absent from a small
training subset gets probability 0 instead of shifting the columns), so that the shared metrics apply.
Multi-label tasks use the per-label weighted neighbour mean as the score; labels masked as unknown count
as negative votes there, because every neighbour needs a value.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ssl_radiology.analysis.knn import DEFAULT_KS, knn_predict, knn_predict_multilabel


def knn_probabilities(
    train_x: np.ndarray,
    train_y: np.ndarray,
    query_x: np.ndarray,
    kind: str,
    n_classes: int,
    ks: Iterable[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_threads: int | None = None,
) -> dict[int, np.ndarray]:
    """``{k: (n_query, n_classes) scores}`` for every requested k (k above n_train is clipped to n_train)."""
    ks = tuple(ks)
    if kind == "multilabel":
        return knn_predict_multilabel(train_x, train_y, query_x, ks, temperature, num_threads)
    votes = knn_predict(train_x, train_y, query_x, ks, temperature, num_threads)
    out = {}
    for k in ks:
        probs = np.zeros((len(query_x), n_classes))
        probs[:, votes.classes] = votes.probabilities(k)
        out[k] = probs
    return out
