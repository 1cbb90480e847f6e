"""Benchmark the evaluation path against baselines measured in the same run.

    .venv/bin/python scripts/bench/evaluation.py                  # default sizes, ~2-3 min on 2 shared cores
    .venv/bin/python scripts/bench/evaluation.py --only knn       # one section
    .venv/bin/python scripts/bench/evaluation.py --bank 20000 --queries 2000   # smaller kNN

Sections (each prints a ratio against its baseline):
  features  images/s of ``extract_features`` (tiny + small ViT on CPU) and a cached re-read vs extraction;
  knn       exact DINO kNN (``features.knn``, faiss) on a 100k × 384 bank with 10k
            queries vs scikit-learn brute-force KNeighborsClassifier with the same weights (goal ≥ 2.5×,
            same accuracy) and vs one bare Q @ Bᵀ similarity product of the same sizes (goal ≤ 1.3×);
  logreg    the warm-started logistic-regression C sweep vs independent cold fits (chosen C, val loss).
Timings on a shared machine are noisy: compare ratios, not absolute seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


class CTArrays(torch.utils.data.Dataset):
    """In-memory CT slices (N, S, S) in HU, served like a PreparedDataset (no disk in the measurement)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": torch.from_numpy(self.images[i])[None], "index": i, "modality": "CT"}


def bench_features(n_images: int, image_size: int) -> None:
    from ssl_radiology.features.extract import extract_features
    from ssl_radiology.models import create_backbone

    rng = np.random.default_rng(0)
    dataset = CTArrays(rng.uniform(-1000, 1000, (n_images, 128, 128)).astype(np.float32))
    for name in ("vit_tiny_patch16_224", "vit_small_patch16_224"):
        model = create_backbone(name, img_size=image_size)
        with tempfile.TemporaryDirectory() as cache:
            kwargs = dict(image_size=image_size, batch_size=64, device="cpu", cache_dir=cache, key="bench")
            extract_features(model, torch.utils.data.Subset(dataset, range(64)), image_size=image_size,
                             batch_size=64, device="cpu")  # fmt: skip  # warm-up
            seconds, features = timed(lambda m=model, kw=kwargs: extract_features(m, dataset, **kw))
            cached, again = timed(lambda m=model, kw=kwargs: extract_features(m, dataset, **kw))
        assert np.array_equal(features, again)
        print(
            f"features {name} @ {image_size}px: {n_images / seconds:8.1f} images/s "
            f"({n_images} images, {seconds:.1f} s); cached re-read {seconds / cached:,.0f}× faster"
        )


def bench_knn(n_bank: int, n_queries: int, dim: int, k: int, threads: int | None) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    from ssl_radiology.features.knn import knn_probabilities

    rng = np.random.default_rng(0)
    centres = 0.12 * rng.normal(size=(10, dim)).astype(np.float32)  # overlapping classes: accuracy < 1
    y_bank = rng.integers(0, 10, n_bank)
    y_query = rng.integers(0, 10, n_queries)
    bank = centres[y_bank] + rng.normal(size=(n_bank, dim)).astype(np.float32)
    queries = centres[y_query] + rng.normal(size=(n_queries, dim)).astype(np.float32)
    temperature = 0.07

    t_ours, probs = timed(lambda: knn_probabilities(bank, y_bank, queries, "multiclass", 10, ks=(k,),
                                                    temperature=temperature, num_threads=threads))  # fmt: skip
    ours = probs[k].argmax(1)

    def weights(distances: np.ndarray) -> np.ndarray:
        return np.exp((1.0 - distances) / temperature)  # cosine distance -> the DINO vote weight

    sk = KNeighborsClassifier(
        n_neighbors=k, algorithm="brute", metric="cosine", weights=weights, n_jobs=threads
    )
    t_sk, theirs = timed(lambda: sk.fit(bank, y_bank).predict(queries))

    bank_n = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    query_n = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    bank_t = torch.from_numpy(bank_n)

    def bare_product() -> None:
        for start in range(0, n_queries, 2048):  # chunks: the full 10k × 100k float32 matrix is 4 GB
            torch.from_numpy(query_n[start : start + 2048]) @ bank_t.T

    t_mm, _ = timed(bare_product)
    acc_ours, acc_sk = np.mean(ours == y_query), np.mean(theirs == y_query)
    print(f"knn bank {n_bank:,} × {dim}, {n_queries:,} queries, k={k}:")
    print(f"  features.knn (faiss exact)  {t_ours:7.2f} s  accuracy {acc_ours:.4f}")
    print(
        f"  sklearn brute force         {t_sk:7.2f} s  accuracy {acc_sk:.4f}  -> ours {t_sk / t_ours:.2f}× faster"
    )
    print(f"  bare Q @ Bᵀ product (torch) {t_mm:7.2f} s  -> ours / product = {t_ours / t_mm:.2f}×")
    print(f"  prediction agreement {np.mean(ours == theirs):.5f}")


def bench_logreg(n: int, dim: int, classes: int) -> None:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ssl_radiology.evaluation.linear import logistic_regression
    from ssl_radiology.evaluation.metrics import validation_loss

    rng = np.random.default_rng(0)
    centres = (
        rng.normal(size=(classes, dim)).astype(np.float32) * 0.06
    )  # overlapping classes (val loss near ln 10)
    y = rng.integers(0, classes, n)
    x = centres[y] + rng.normal(size=(n, dim)).astype(np.float32)
    tr, va = slice(0, int(0.8 * n)), slice(int(0.8 * n), n)
    cs = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    train, val = (x[tr], y[tr], None), (x[va], y[va], None)
    t_warm, (_, info) = timed(
        lambda: logistic_regression(train, val, train, x[va], "multiclass", classes, cs=cs, seed=0)
    )

    def cold() -> tuple[float, float]:
        scaler = StandardScaler().fit(x[tr])
        losses = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for c in cs:
                model = LogisticRegression(C=c, max_iter=1000, random_state=0).fit(
                    scaler.transform(x[tr]), y[tr]
                )
                losses.append(
                    validation_loss("multiclass", y[va], model.predict_proba(scaler.transform(x[va])))
                )
            LogisticRegression(C=cs[int(np.argmin(losses))], max_iter=1000).fit(
                scaler.transform(x[tr]), y[tr]
            )
        return cs[int(np.argmin(losses))], min(losses)

    t_cold, (c_cold, loss_cold) = timed(cold)
    print(
        f"logreg sweep {len(cs)} C values, {n:,} × {dim}, {classes} classes: warm-started {t_warm:.2f} s "
        f"(C={info['chosen_C']:g}, val loss {info['val_loss']:.4f}) vs cold fits {t_cold:.2f} s "
        f"(C={c_cold:g}, val loss {loss_cold:.4f}) -> {t_cold / t_warm:.2f}× faster"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=["features", "knn", "logreg"])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--bank", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="faiss / sklearn threads (default: all)")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}; timings on a shared machine are noisy")
    if "features" in args.only:
        bench_features(args.images, args.image_size)
    if "knn" in args.only:
        bench_knn(args.bank, args.queries, args.dim, args.k, args.threads)
    if "logreg" in args.only:
        bench_logreg(5000, args.dim, 10)


if __name__ == "__main__":
    main()
