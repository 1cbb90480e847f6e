"""PNG figures for the analysis: embeddings coloured by domain/label, layer-wise CKA heatmaps, bar charts.

Figures are built with :class:`matplotlib.figure.Figure` and saved through the Agg canvas, never through
``pyplot``: no global backend switch, no open-figure registry, safe in headless CI and worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

#: Up to this many distinct labels get a categorical palette and a legend; more numeric labels a colour bar.
MAX_CATEGORIES = 20


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=150, bbox_inches="tight")
    return path


def plot_embedding(
    embedding: np.ndarray,
    labels: Sequence | np.ndarray,
    path: str | Path,
    title: str = "",
    caption: str | None = None,
) -> Path:
    """Scatter a 2-D embedding, one colour per label (domain, site, class), and save it as PNG."""
    embedding = np.asarray(embedding)
    labels = np.asarray(labels)
    if embedding.ndim != 2 or embedding.shape[1] != 2 or len(labels) != len(embedding):
        raise ValueError(f"need an (n, 2) embedding and n labels, got {embedding.shape} and {labels.shape}")
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot()
    size = max(1.0, min(20.0, 4000.0 / max(len(embedding), 1)))
    names = np.unique(labels)
    if len(names) > MAX_CATEGORIES and np.issubdtype(labels.dtype, np.number):
        points = ax.scatter(embedding[:, 0], embedding[:, 1], c=labels, s=size, cmap="viridis", linewidths=0)
        fig.colorbar(points, ax=ax)
    else:
        palette = "tab10" if len(names) <= 10 else "tab20"
        cmap = matplotlib.colormaps[palette]
        for i, name in enumerate(names):
            mask = labels == name
            ax.scatter(
                embedding[mask, 0],
                embedding[mask, 1],
                s=size,
                color=cmap(i % cmap.N),
                label=str(name),
                linewidths=0,
                alpha=0.8,
            )
        ax.legend(markerscale=max(1.0, 6.0 / size), fontsize="small", loc="best", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    if caption:
        fig.text(0.01, -0.02, caption, ha="left", va="top", fontsize="small", wrap=True)
    return _save(fig, path)


def plot_cka_heatmap(
    matrix: np.ndarray, names_x: Sequence[str], names_y: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Heatmap of a layers_x × layers_y CKA matrix on a fixed 0…1 scale (comparable across figures)."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (len(names_x), len(names_y)):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(names_x)} × {len(names_y)} names")
    fig = Figure(figsize=(1.5 + 0.45 * len(names_y), 1.2 + 0.4 * len(names_x)))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma", origin="lower", aspect="auto")
    ax.set_xticks(range(len(names_y)), [str(n) for n in names_y], rotation=60, ha="right", fontsize="small")
    ax.set_yticks(range(len(names_x)), [str(n) for n in names_x], fontsize="small")
    fig.colorbar(image, ax=ax, label="CKA")
    ax.set_title(title)
    return _save(fig, path)


def plot_bars(groups: dict[str, dict[str, float]], path: str | Path, title: str, ylabel: str) -> Path:
    """Bars of ``{group: {name: value}}``, values printed on top.

    One group (kNN per checkpoint or per layer): the names label the x axis. Several groups (domain
    metrics): one cluster per group, one colour per name, with a legend.
    """
    names = list(dict.fromkeys(n for values in groups.values() for n in values))
    single = len(groups) == 1
    width = 0.8 if single else 0.8 / max(len(names), 1)
    fig = Figure(figsize=(max(4.0, 1.2 + 0.5 * len(groups) * len(names)), 3.6))
    ax = fig.add_subplot()
    for j, name in enumerate(names):
        offset = 0.0 if single else (j - (len(names) - 1) / 2) * width
        xs = (np.array([j]) if single else np.arange(len(groups))) + offset
        values = [float(groups[g].get(name, np.nan)) for g in groups]
        bars = ax.bar(xs, values, width=width, label=name)
        labels = ["n/a" if not np.isfinite(v) else f"{v:.3f}" for v in values]
        ax.bar_label(bars, labels=labels, fontsize="x-small", padding=2)
    ticks = names if single else list(groups)
    ax.set_xticks(range(len(ticks)), ticks, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.margins(y=0.15)
    if not single:
        ax.legend(fontsize="small", frameon=False, loc="best")
    return _save(fig, path)
