"""UMAP views (seeded, faiss graph reuse) and the PNG plot helpers.

UMAP tests are few and small, and every fit reuses a faiss neighbour graph: importing umap and the first
fit pay numba compilation (~30 s of CPU), and UMAP's own NN search would compile another ~30 s of code.
"""

import numpy as np
import pytest

from ssl_radiology.analysis.plots import plot_cka_heatmap, plot_embedding
from ssl_radiology.analysis.umap_view import knn_graph, umap_embedding

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_groups():
    rng = np.random.default_rng(0)
    centres = 6.0 * np.eye(16)[:2]
    labels = np.repeat(["siteA", "siteB"], 120)
    features = (rng.normal(size=(240, 16)) + centres[(labels == "siteB").astype(int)]).astype(np.float32)
    return features, labels


@pytest.fixture(scope="module")
def embeddings(two_groups):
    features, _ = two_groups
    graph = knn_graph(features, n_neighbors=20)  # wider than needed: umap_embedding trims it
    return {
        "first": umap_embedding(features, seed=3, n_neighbors=10, knn=graph),
        "again": umap_embedding(features, seed=3, n_neighbors=10, knn=graph),
        "other_seed": umap_embedding(features, seed=4, n_neighbors=10, knn=graph),
    }


def test_same_seed_gives_same_embedding(embeddings):
    assert embeddings["first"].shape == (240, 2)
    assert embeddings["first"].dtype == np.float32
    np.testing.assert_array_equal(embeddings["first"], embeddings["again"])
    assert not np.array_equal(embeddings["first"], embeddings["other_seed"])


def test_embedding_keeps_groups_apart(two_groups, embeddings):
    _, labels = two_groups
    for emb in (embeddings["first"], embeddings["other_seed"]):
        a, b = emb[labels == "siteA"], emb[labels == "siteB"]
        gap = np.linalg.norm(a.mean(axis=0) - b.mean(axis=0))
        assert gap > 3 * max(a.std(axis=0).max(), b.std(axis=0).max())


def test_knn_graph_format(two_groups):
    features, _ = two_groups
    duplicated = np.concatenate([features, features[:5]])
    indices, distances = knn_graph(duplicated, n_neighbors=6)
    assert indices.shape == distances.shape == (245, 6)
    np.testing.assert_array_equal(indices[:, 0], np.arange(245))
    assert np.all(distances[:, 0] == 0) and np.all(np.diff(distances, axis=1) >= -1e-6)
    assert all(len(set(row)) == 6 for row in indices)  # self is never listed twice


def test_plots_write_png(tmp_path, two_groups, embeddings):
    _, labels = two_groups
    path = plot_embedding(
        embeddings["first"], labels, tmp_path / "emb.png", "UMAP", caption="phantom, seed 3"
    )
    assert path.read_bytes()[:8] == PNG_MAGIC
    continuous = plot_embedding(embeddings["first"], np.arange(240.0), tmp_path / "age.png", "by value")
    assert continuous.read_bytes()[:8] == PNG_MAGIC
    heat = plot_cka_heatmap(
        np.eye(3)[:, :2], ["a", "b", "c"], ["x", "y"], tmp_path / "sub" / "cka.png", "CKA"
    )
    assert heat.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="does not match"):
        plot_cka_heatmap(np.eye(3), ["a"], ["x"], tmp_path / "bad.png")
