"""How strongly a feature space separates domains (sites, scanners, modalities, datasets).

A representation that transfers across hospitals should *not* let a simple probe tell the domains apart;
these metrics quantify that from several angles, each with its own failure mode:

* ``probe_accuracy`` — cross-validated multinomial logistic regression (standardised features,
  ``StratifiedKFold``), next to ``chance_accuracy`` (majority-domain share).
* ``proxy_a_distance`` — Ben-David et al.'s ``2(1 − 2ε)`` with ε the cross-validated error of a *binary*
  probe. It is defined for two domains; for more, it is the mean over all domain pairs (each pair gets its
  own binary probe), so the value keeps its 0 (indistinguishable) … 2 (separable) scale. Not clipped: a
  slightly negative value is sampling noise around 0.
* ``knn_purity`` — fraction of each point's k nearest cosine neighbours (self excluded, exact faiss search)
  from its own domain, next to ``knn_purity_chance`` = Σ p_d² expected for well-mixed domains.
* ``silhouette`` — cosine silhouette of the domain labelling on at most ``max_silhouette`` points (seeded
  sample; the full computation is O(n²)).
* ``frechet_distance`` — per domain pair ``‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½)`` (the FID formula on these
  features; real part of ``scipy.linalg.sqrtm``), keyed ``"a vs b"``, and their mean.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import scipy.linalg
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ssl_radiology.features.knn import cosine_search


def _probe_accuracy(features: np.ndarray, domains: np.ndarray, n_splits: int, seed: int) -> float:
    """Mean cross-validated accuracy of a linear domain classifier."""
    smallest = int(np.unique(domains, return_counts=True)[1].min())
    folds = StratifiedKFold(n_splits=min(n_splits, smallest), shuffle=True, random_state=seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(probe, features, domains, cv=folds, scoring="accuracy").mean())


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows = examples)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root).real)


def knn_domain_purity(features: np.ndarray, domains: np.ndarray, k: int, num_threads: int | None) -> float:
    """Mean fraction of the k nearest other points that share the query's domain."""
    k = min(k, len(features) - 1)
    _, indices = cosine_search(features, features, k + 1, num_threads)
    neighbours = _drop_self(indices)
    return float(np.mean(domains[neighbours[:, :k]] == domains[:, None]))


def _drop_self(indices: np.ndarray) -> np.ndarray:
    """Remove each row's own index (usually first, but exact duplicates may reorder it) from a k+1 search."""
    own = indices == np.arange(len(indices))[:, None]
    own[~own.any(axis=1), -1] = True  # self not found among ties: drop the farthest instead
    return indices[~own].reshape(len(indices), -1)


def domain_metrics(
    features: np.ndarray,
    domains: np.ndarray,
    seed: int = 0,
    k: int = 20,
    n_splits: int = 5,
    max_silhouette: int = 5000,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """All domain-separation metrics for ``features`` (n, d) labelled with ``domains`` (n,) (any labels)."""
    features = np.asarray(features, dtype=np.float64)
    domains = np.asarray(domains)
    if features.ndim != 2 or len(features) != len(domains):
        raise ValueError(f"need features (n, d) and domains (n,), got {features.shape} and {domains.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError("features contain NaN or infinite values")
    names, counts = np.unique(domains, return_counts=True)
    if len(names) < 2:
        raise ValueError("domain metrics need at least two different domains")
    if counts.min() < 2:
        raise ValueError(
            f"every domain needs at least 2 examples; {names[counts.argmin()]!r} has {counts.min()}"
        )

    probe_accuracy = _probe_accuracy(features, domains, n_splits, seed)
    pair_pad, pair_fd = [], {}
    for first, second in combinations(names, 2):
        mask = (domains == first) | (domains == second)
        pair_accuracy = (
            probe_accuracy
            if len(names) == 2
            else _probe_accuracy(features[mask], domains[mask], n_splits, seed)
        )
        error = 1.0 - pair_accuracy
        pair_pad.append(2.0 * (1.0 - 2.0 * error))
        pair_fd[f"{first} vs {second}"] = frechet_distance(
            features[domains == first], features[domains == second]
        )

    shares = counts / counts.sum()
    silhouette = silhouette_score(
        features, domains, metric="cosine", sample_size=min(max_silhouette, len(features)), random_state=seed
    )
    return {
        "n": len(features),
        "domains": [str(name) for name in names],
        "probe_accuracy": probe_accuracy,
        "chance_accuracy": float(shares.max()),
        "proxy_a_distance": float(np.mean(pair_pad)),
        "knn_purity": knn_domain_purity(features, domains, k, num_threads),
        "knn_purity_chance": float(np.sum(shares**2)),
        "silhouette": float(silhouette),
        "frechet_distance": pair_fd,
        "frechet_distance_mean": float(np.mean(list(pair_fd.values()))),
    }
