"""Benchmark the feature-space analysis against baselines measured in the same run.

    .venv/bin/python scripts/bench/analysis.py            # --quick sizes, ~3 min on 2 shared cores
    .venv/bin/python scripts/bench/analysis.py --full     # the issue's sizes (50k CKA, 10k ViT images, ...)
    .venv/bin/python scripts/bench/analysis.py --only knn umap

Sections (each prints a ratio against its baseline):
  cka     feature-space linear CKA vs the n × n Gram form (time, tracemalloc peak, agreement);
  layers  12×12 layer-wise minibatch CKA between two 12-block ViT-S-shaped models (images/s);
  knn     faiss weighted kNN vs scikit-learn brute force (same accuracy) and vs a bare Q @ Bᵀ matmul floor;
  umap    UMAP with a faiss neighbour graph: first call (numba compilation) and second call.
Timings on a shared machine are noisy: compare ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

SIZES = {
    "quick": {
        "cka_n": 20_000,
        "gram_n": 2_500,
        "vit_images": 64,
        "bank": 20_000,
        "queries": 2_000,
        "umap_n": 2_000,
    },
    "full": {
        "cka_n": 50_000,
        "gram_n": 8_000,
        "vit_images": 10_000,
        "bank": 100_000,
        "queries": 10_000,
        "umap_n": 50_000,
    },
}


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Best wall time over ``repeats`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_mib(fn: Callable[[], Any]) -> float:
    """Peak Python/numpy heap allocation (tracemalloc) during one call, in MiB."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def paired_features(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 features of two 'networks' that share part of their signal, with a large offset."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = np.tanh(x @ rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d))
    y += 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    return x + 100.0, y


def bench_cka(sizes: dict) -> None:
    from ssl_radiology.analysis.cka import cka_from_grams, linear_cka

    def gram_cka(x: np.ndarray, y: np.ndarray) -> float:
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        return cka_from_grams(x64 @ x64.T, y64 @ y64.T)

    n, n_gram = sizes["cka_n"], sizes["gram_n"]
    for d in (384, 768):
        x, y = paired_features(n, d)
        t_feat, value = timed(lambda x=x, y=y: linear_cka(x, y))
        t_deb, _ = timed(lambda x=x, y=y: linear_cka(x, y, debiased=True))
        mem_feat = peak_mib(lambda x=x, y=y: linear_cka(x, y))
        print(
            f"[cka] n={n} d={d}: feature-space {t_feat:.2f} s (debiased {t_deb:.2f} s), peak {mem_feat:.0f} MiB, CKA={value:.6f}"
        )
        xs, ys = x[:n_gram], y[:n_gram]
        t_small, small = timed(lambda xs=xs, ys=ys: linear_cka(xs, ys), repeats=2)
        t_gram, reference = timed(lambda xs=xs, ys=ys: gram_cka(xs, ys))
        mem_gram = peak_mib(lambda xs=xs, ys=ys: gram_cka(xs, ys))
        mem_small = peak_mib(lambda xs=xs, ys=ys: linear_cka(xs, ys))
        print(
            f"[cka] n={n_gram} d={d}: Gram form {t_gram:.2f} s peak {mem_gram:.0f} MiB vs feature-space "
            f"{t_small:.3f} s peak {mem_small:.0f} MiB → {t_gram / t_small:.1f}× faster, "
            f"{mem_gram / mem_small:.0f}× less memory, |Δ|={abs(small - reference):.1e}"
        )
        scaled = t_gram * (n / n_gram) ** 2
        print(
            f"[cka] Gram form extrapolated to n={n} (O(n²d) time, {2 * 8 * n**2 / 2**30:.0f} GiB for two Grams): "
            f"≈{scaled:.0f} s → feature-space ≈{scaled / t_feat:.0f}× faster"
        )


def bench_layers(sizes: dict, batch_size: int = 64) -> None:
    import timm

    from ssl_radiology.analysis.cka import MultiLayerMinibatchCKA
    from ssl_radiology.analysis.layers import layer_cka

    def vit(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return timm.create_model(
            "vit_small_patch16_224", img_size=32, patch_size=4, in_chans=1, num_classes=0
        )

    model_x, model_y = vit(0), vit(1)
    n = max(sizes["vit_images"] // batch_size, 1)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(batch_size, 1, 32, 32, generator=generator) for _ in range(n)]
    t_total, (matrix, names_x, _) = timed(lambda: layer_cka(model_x, model_y, batches))
    images = n * batch_size
    # The CKA part alone, on stand-in pooled activations of the same shapes (12 layers × 384 features):
    pooled = [torch.randn(batch_size, model_x.num_features, generator=generator) for _ in names_x]
    accumulator = MultiLayerMinibatchCKA(len(names_x), len(names_x))
    t_cka, _ = timed(lambda: [accumulator.update(pooled, pooled) for _ in range(n)])
    print(
        f"[layers] {len(names_x)}×{len(names_x)} CKA between two 12-block ViT-S/4 at 32 px (65 tokens), {images} "
        f"images, batch {batch_size}: {images / t_total:.1f} images/s end to end; the CKA updates alone "
        f"{images / t_cka:.0f} images/s ({100 * t_cka / t_total:.1f}% of the run: the forward passes dominate); "
        f"diag mean {np.diag(matrix).mean():.3f}"
    )


def clustered(n: int, centres: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy float32 samples around class centres, with their labels."""
    labels = rng.integers(0, len(centres), n)
    noise = 1.5 * rng.standard_normal((n, centres.shape[1]), dtype=np.float32)
    return centres[labels] + noise, labels


def bench_knn(sizes: dict, k: int = 20, temperature: float = 0.07, threads: int = 2) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    from ssl_radiology.features.knn import knn_accuracy

    rng = np.random.default_rng(0)
    centres = (
        rng.standard_normal((100, 384), dtype=np.float32) * 0.35
    )  # accuracy ≈ 0.6: neither trivial nor chance
    bank_x, bank_y = clustered(sizes["bank"], centres, rng)
    query_x, query_y = clustered(sizes["queries"], centres, rng)

    t_faiss, acc_faiss = timed(
        lambda: knn_accuracy(bank_x, bank_y, query_x, query_y, k, temperature, num_threads=threads), repeats=2
    )

    def sklearn_accuracy() -> float:
        vote = KNeighborsClassifier(
            n_neighbors=k,
            algorithm="brute",
            metric="cosine",
            weights=lambda dist: np.exp((1.0 - dist) / temperature),
        )
        return float(np.mean(vote.fit(bank_x, bank_y).predict(query_x) == query_y))

    t_sklearn, acc_sklearn = timed(sklearn_accuracy)

    torch.set_num_threads(threads)
    bank_t = torch.nn.functional.normalize(torch.from_numpy(bank_x), dim=1)
    query_t = torch.nn.functional.normalize(torch.from_numpy(query_x), dim=1)
    chunks = query_t.split(2_000)
    t_matmul, _ = timed(lambda: [q @ bank_t.T for q in chunks], repeats=2)
    t_topk, _ = timed(lambda: [torch.topk(q @ bank_t.T, k, dim=1) for q in chunks], repeats=2)
    shape = f"{len(bank_x)}×384 bank, {len(query_x)} queries, k={k}, {threads} threads"
    print(
        f"[knn] {shape}: faiss {t_faiss:.2f} s (acc {acc_faiss:.4f}) vs sklearn brute cosine {t_sklearn:.2f} s "
        f"(acc {acc_sklearn:.4f}) → {t_sklearn / t_faiss:.1f}× faster"
    )
    print(
        f"[knn] floor: bare Q @ Bᵀ {t_matmul:.2f} s, with topk {t_topk:.2f} s → faiss kNN = "
        f"{t_faiss / t_matmul:.2f}× the matmul, {t_faiss / t_topk:.2f}× matmul+topk"
    )


def bench_umap(sizes: dict) -> None:
    from ssl_radiology.analysis.umap_view import knn_graph, umap_embedding

    rng = np.random.default_rng(2)
    features, _ = clustered(sizes["umap_n"], rng.standard_normal((20, 384), dtype=np.float32), rng)
    t_graph, graph = timed(lambda: knn_graph(features, 15, num_threads=2))
    t_first, _ = timed(lambda: umap_embedding(features, seed=0, knn=graph))
    t_second, _ = timed(lambda: umap_embedding(features, seed=0, knn=graph))
    print(
        f"[umap] {len(features)}×384: faiss exact 15-NN graph {t_graph:.1f} s; UMAP first call {t_first:.1f} s "
        f"(numba compile + fit), second call {t_second:.1f} s (NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR')})"
    )


SECTIONS = {"cka": bench_cka, "layers": bench_layers, "knn": bench_knn, "umap": bench_umap}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick", help="default, ~3-4 min")
    size.add_argument("--full", dest="size", action="store_const", const="full", help="the issue's sizes")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run only these sections")
    parser.add_argument("--vit-images", type=int, help="override the number of images for the layers section")
    args = parser.parse_args()
    sizes = dict(SIZES[args.size or "quick"])
    if args.vit_images:
        sizes["vit_images"] = args.vit_images
    print(
        f"sizes: {args.size or 'quick'} {sizes}; torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
    )
    for name in args.only or SECTIONS:
        start = time.perf_counter()
        SECTIONS[name](sizes)
        print(f"[{name}] section took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
