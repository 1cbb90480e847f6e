"""Domain-separation metrics on separable blobs vs samples from one distribution."""

import numpy as np
import pytest

from ssl_radiology.analysis.domains import domain_metrics, frechet_distance


def _blobs(shift: float, n_domains: int = 2, n: int = 150, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = shift * np.eye(d)[:n_domains]  # different directions, so cosine geometry separates them too
    features = np.concatenate([rng.normal(size=(n, d)) + centre for centre in centres])
    domains = np.repeat([f"site{i}" for i in range(n_domains)], n)
    return features, domains


def test_separable_domains():
    features, domains = _blobs(shift=8.0)
    metrics = domain_metrics(features, domains, seed=0)
    assert metrics["probe_accuracy"] > 0.98
    assert metrics["proxy_a_distance"] > 1.9
    assert metrics["knn_purity"] > 0.98
    assert metrics["silhouette"] > 0.5
    # Fréchet distance of two Gaussians with equal covariance = squared mean distance (2 × 8²) ± noise.
    assert metrics["frechet_distance"]["site0 vs site1"] == pytest.approx(128.0, rel=0.1)


def test_identical_distributions():
    features, domains = _blobs(shift=0.0)
    metrics = domain_metrics(features, domains, seed=0)
    assert abs(metrics["probe_accuracy"] - 0.5) < 0.12
    assert abs(metrics["proxy_a_distance"]) < 0.45
    assert metrics["knn_purity"] == pytest.approx(metrics["knn_purity_chance"], abs=0.08)
    assert abs(metrics["silhouette"]) < 0.05
    assert metrics["frechet_distance_mean"] < 1.5


def test_more_than_two_domains_uses_pairs_and_is_seeded():
    features, domains = _blobs(shift=5.0, n_domains=3, n=60)
    first = domain_metrics(features, domains, seed=1)
    assert set(first["frechet_distance"]) == {"site0 vs site1", "site0 vs site2", "site1 vs site2"}
    assert first["chance_accuracy"] == pytest.approx(1 / 3)
    assert first["proxy_a_distance"] > 1.5
    assert first == domain_metrics(features, domains, seed=1)


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(20000, 2))
    b = rng.normal(size=(20000, 2)) * np.array([2.0, 1.0]) + np.array([1.0, 0.0])
    # ‖μ‖² = 1, tr(Σa + Σb − 2(ΣaΣb)^½) = (1 + 4 − 4) + (1 + 1 − 2) = 1.
    assert frechet_distance(a, b) == pytest.approx(2.0, abs=0.1)


def test_rejects_single_domain_and_tiny_domains():
    features, _ = _blobs(shift=0.0, n=10)
    with pytest.raises(ValueError, match="two different domains"):
        domain_metrics(features, np.zeros(len(features)))
    with pytest.raises(ValueError, match="at least 2 examples"):
        domain_metrics(features, np.r_[np.zeros(len(features) - 1), 1])
