"""What an analysis writes: a JSON payload with a Markdown ``caption`` (embedded by ``report.md``).

Captions state the numbers and their chance levels in words, so a figure is never shown without what it
means. JSON is strict (non-finite floats become ``null``) and written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def fmt(value: float | None) -> str:
    """Three decimals, or ``n/a`` for a missing / non-finite value."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def domain_phrase(counts: dict[str, int]) -> str:
    """``CT slices (300), X-ray (120)``."""
    return ", ".join(f"{name} ({n})" for name, n in counts.items())


def domain_sentence(name: str, m: dict[str, Any]) -> str:
    """One checkpoint's domain metrics next to their chance levels."""
    return (
        f"**{name}**: linear probe tells the domains apart with accuracy {fmt(m['probe_accuracy'])} "
        f"(chance {fmt(m['chance_accuracy'])}), kNN domain purity {fmt(m['knn_purity'])} "
        f"(chance {fmt(m['knn_purity_chance'])}), proxy A-distance {fmt(m['proxy_a_distance'])}, "
        f"silhouette {fmt(m['silhouette'])}."
    )


def cka_caption(
    first: str,
    second: str,
    matrix: np.ndarray,
    n_layers: tuple[int, int],
    pooling: str,
    n_images: int,
    domains: dict[str, int],
    pairs: list[dict[str, Any]],
) -> str:
    diagonal = np.diag(matrix) if matrix.shape[0] == matrix.shape[1] else np.array([])
    pair_text = "; ".join(f"{p['a']} vs {p['b']} {fmt(p['linear_cka'])}" for p in pairs)
    return (
        f"Layer-wise linear CKA (unbiased minibatch estimator, Nguyen et al. 2021; layer outputs pooled "
        f"'{pooling}') between **{first}** (rows, {n_layers[0]} layers) and **{second}** (columns, "
        f"{n_layers[1]} layers) over {n_images} images: {domain_phrase(domains)}. "
        + (f"Matching layers average CKA {fmt(float(np.nanmean(diagonal)))}; " if diagonal.size else "")
        + f"last layers {fmt(float(matrix[-1, -1]))}. Final-feature linear CKA: {pair_text} "
        "(1 = same representation up to rotation and scale)."
    )


def knn_caption(
    task: str,
    metric: str,
    k: int,
    temperature: float,
    sizes: tuple[int, int],
    scores: dict[str, float],
    layers: dict[str, float],
    first: str,
    pooling: str,
) -> str:
    ranked = ", ".join(f"**{name}** {fmt(v)}" for name, v in sorted(scores.items(), key=lambda kv: -kv[1]))
    caption = (
        f"Weighted kNN (DINO protocol: cosine, k = {k}, T = {temperature:g}) on {task} ({sizes[0]} training, "
        f"{sizes[1]} test images), {metric}: {ranked}."
    )
    if layers:
        best = max(layers, key=lambda n: layers[n] if np.isfinite(layers[n]) else -np.inf)
        caption += (
            f" Per layer of {first} (outputs pooled '{pooling}'): from {fmt(next(iter(layers.values())))} at "
            f"{next(iter(layers))} to {fmt(layers['output'])} at the output; best {best} ({fmt(layers[best])})."
        )
    return caption


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars/arrays to Python, non-finite floats to None (valid strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half-written result behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_plain(payload), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path
