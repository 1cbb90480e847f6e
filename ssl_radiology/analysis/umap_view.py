"""Two-dimensional UMAP views of feature spaces, reproducible and fast on large sets.

* Reproducible: ``random_state=seed`` (umap-learn then runs its optimisation single-threaded, which is
  what makes equal seeds give equal embeddings).
* Fast on large sets: the exact cosine neighbour graph from faiss (:func:`knn_graph`) can be passed as
  ``knn`` so UMAP skips NN-descent; that graph is also exact rather than approximate.
* Compile once: umap-learn's numba kernels are cached on disk. ``NUMBA_CACHE_DIR`` must be set before
  numba is first imported, so ``umap`` is imported lazily and the variable defaults to
  ``$SSL_RAD_CACHE/numba`` (or ``~/.cache/ssl-radiology/numba``) when the caller has not set it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ssl_radiology.features.knn import cosine_search


def _ensure_numba_cache() -> None:
    if "NUMBA_CACHE_DIR" not in os.environ:
        root = Path(os.environ.get("SSL_RAD_CACHE", Path.home() / ".cache" / "ssl-radiology"))
        (root / "numba").mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(root / "numba")


def knn_graph(
    features: np.ndarray, n_neighbors: int = 15, num_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine neighbour graph in ``umap.umap_.nearest_neighbors`` format.

    Returns ``(indices int64 (n, k), cosine distances float32 (n, k))`` where each point's first neighbour
    is itself at distance 0, as UMAP's ``precomputed_knn`` expects.
    """
    n = len(features)
    if not 2 <= n_neighbors <= n:
        raise ValueError(f"n_neighbors must be between 2 and the number of points {n}, got {n_neighbors}")
    similarities, indices = cosine_search(features, features, n_neighbors, num_threads)
    indices = indices.astype(np.int64)
    distances = np.clip(1.0 - similarities, 0.0, 2.0).astype(np.float32)
    # Exact duplicates can rank another point before the query itself; UMAP wants self in column 0.
    rows = np.arange(n)
    misplaced = indices[:, 0] != rows
    if misplaced.any():
        indices[misplaced, 1:] = np.where(
            indices[misplaced, 1:] == rows[misplaced, None], indices[misplaced, :1], indices[misplaced, 1:]
        )
        indices[misplaced, 0] = rows[misplaced]
    distances[:, 0] = 0.0
    return indices, distances


def umap_embedding(
    features: np.ndarray,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    knn: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """(n, 2) float32 UMAP embedding of ``features`` (n, d).

    ``knn``: an optional precomputed neighbour graph (e.g. from :func:`knn_graph`, computed with the same
    ``metric``) with at least ``n_neighbors`` columns; extra columns are dropped.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) <= n_neighbors:
        raise ValueError(
            f"need (n, d) features with n > n_neighbors={n_neighbors}, got shape {features.shape}"
        )
    precomputed: tuple = (None, None, None)
    if knn is not None:
        indices, distances = (np.asarray(part) for part in knn)
        if (
            indices.shape != distances.shape
            or indices.shape[0] != len(features)
            or indices.shape[1] < n_neighbors
        ):
            raise ValueError(
                f"knn graph of shape {indices.shape} does not fit {len(features)} points × {n_neighbors} neighbours"
            )
        precomputed = (indices[:, :n_neighbors], distances[:, :n_neighbors])
    _ensure_numba_cache()
    import umap

    reducer = umap.UMAP(
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        precomputed_knn=precomputed,
    )
    with warnings.catch_warnings():
        # Expected and harmless: a seed disables parallelism; a precomputed graph has no search index.
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        return reducer.fit_transform(features).astype(np.float32)
