"""The four analyses of ``ssl-rad analyze``: each takes backbone references, data and :class:`Settings`,
writes ``<kind>.json`` (with a caption) plus PNG figures into ``out`` and returns the JSON payload.

Features come from :mod:`ssl_radiology.features` through the settings (same cache as ``ssl-rad knn``);
the arithmetic lives in the pure modules (``cka``, ``layers``, ``domains``, ``umap_view``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssl_radiology.analysis.output import (
    cka_caption,
    domain_phrase,
    domain_sentence,
    fmt,
    knn_caption,
    write_json,
)
from ssl_radiology.analysis.sampling import DomainSample, sample_domains
from ssl_radiology.analysis.settings import Settings, distinct_labels, final_features, load_model, slug
from ssl_radiology.api.types import BackboneRef
from ssl_radiology.errors import UserError

ANALYSES = ("cka", "knn", "umap", "domains")
REPORT_K = 20  # DESIGN.md §4: kNN accuracy is reported at k = 20
DOMAIN_BARS = ("probe_accuracy", "knn_purity", "proxy_a_distance", "silhouette")


def run_cka(
    backbones: Sequence[BackboneRef], sample: DomainSample, settings: Settings, out: Path, seed: int = 0
) -> dict[str, Any]:
    """Layer-wise CKA heatmap of the first two backbones and final-feature linear CKA of every pair."""
    from ssl_radiology.analysis.cka import linear_cka
    from ssl_radiology.analysis.layers import layer_cka
    from ssl_radiology.analysis.plots import plot_cka_heatmap

    if len(backbones) < 2:
        raise UserError("cka compares checkpoints: give at least two --checkpoint values")
    first, second = backbones[:2]
    matrix, names_x, names_y = layer_cka(
        load_model(first, settings),
        load_model(second, settings),
        settings.batches(sample.dataset, shuffle_seed=seed),
        device=settings.device,
        pooling=settings.pooling,
    )
    figure = out / f"cka_{slug(first.label)}_vs_{slug(second.label)}.png"
    title = f"CKA ({settings.pooling} pooling): {first.label} (rows) vs {second.label} (columns)"
    plot_cka_heatmap(matrix, names_x, names_y, figure, title=title)
    features = {b.label: final_features(b, sample, settings) for b in backbones}
    pairs = []
    for i, a in enumerate(backbones):
        for b in backbones[i + 1 :]:
            fa, fb = features[a.label], features[b.label]
            pairs.append(
                {
                    "a": a.label,
                    "b": b.label,
                    "linear_cka": linear_cka(fa, fb),
                    "linear_cka_debiased": linear_cka(fa, fb, debiased=True),
                }
            )
    caption = cka_caption(
        first.label,
        second.label,
        matrix,
        (len(names_x), len(names_y)),
        settings.pooling,
        len(sample.domains),
        sample.counts(),
        pairs,
    )
    payload = {
        "analysis": "cka",
        "caption": caption,
        "data": sample.name,
        "domains": sample.counts(),
        "image_size": settings.image_size,
        "pooling": settings.pooling,
        "x": first.label,
        "y": second.label,
        "layers_x": names_x,
        "layers_y": names_y,
        "matrix": matrix.tolist(),
        "final_features": pairs,
        "figure": figure.name,
    }
    write_json(out / "cka.json", payload)
    return payload


def _knn_headline(
    task: Any, bank: np.ndarray, query: np.ndarray, features: np.ndarray, settings: Settings
) -> float:
    from ssl_radiology.evaluation.metrics import classification_metrics, primary_metric
    from ssl_radiology.features.knn import knn_probabilities

    probs = knn_probabilities(
        features[bank],
        task.labels[bank],
        features[query],
        task.kind,
        len(task.class_names),
        ks=(REPORT_K,),
        temperature=float(settings.cfg.temperature),
        num_threads=settings.num_threads,
    )[REPORT_K]
    mask = None if task.label_mask is None else task.label_mask[query]
    metrics = classification_metrics(task.kind, task.labels[query], probs, task.class_names, mask, 0)
    return float(metrics[primary_metric(task.kind)])


def run_knn(
    backbones: Sequence[BackboneRef],
    task_name: str,
    settings: Settings,
    out: Path,
    per_layer: bool = False,
) -> dict[str, Any]:
    """kNN (DINO protocol, k = 20) per backbone on a labelled task; optionally per layer of the first one.

    Bank = the task's whole training split, queries = its test split: the numbers equal ``ssl-rad knn`` at
    ``--fraction 1`` for the same seed (same cached features).
    """
    from ssl_radiology.analysis.plots import plot_bars
    from ssl_radiology.evaluation.metrics import primary_metric
    from ssl_radiology.evaluation.tasks import load_task
    from ssl_radiology.features.layers import layer_features

    task = load_task(task_name, settings.image_size)
    bank, query = task.indices("train"), task.indices("test")
    if not len(bank) or not len(query):
        raise UserError(f"task {task.name}: kNN needs training and test images ({len(bank)} / {len(query)})")
    metric = primary_metric(task.kind)
    scores = {
        b.label: _knn_headline(task, bank, query, final_features(b, task, settings), settings)
        for b in backbones
    }
    figure = out / "knn.png"
    plot_bars({metric: scores}, figure, title=f"kNN (k={REPORT_K}) on {task.name}", ylabel=metric)
    figures = [figure.name]
    layers: dict[str, float] = {}
    first = backbones[0]
    if per_layer:
        per = layer_features(
            load_model(first, settings), settings.batches(task.dataset), pooling=settings.pooling
        )
        layers = {name: _knn_headline(task, bank, query, values, settings) for name, values in per.items()}
        layer_figure = out / f"knn_layers_{slug(first.label)}.png"
        title = f"kNN per layer ({settings.pooling} pooling) of {first.label} on {task.name}"
        plot_bars({metric: layers}, layer_figure, title=title, ylabel=metric)
        figures.append(layer_figure.name)
    temperature = float(settings.cfg.temperature)
    sizes = (len(bank), len(query))
    payload = {
        "analysis": "knn",
        "caption": knn_caption(
            task.name, metric, REPORT_K, temperature, sizes, scores, layers, first.label, settings.pooling
        ),
        "task": task.name,
        "metric": metric,
        "k": REPORT_K,
        "temperature": temperature,
        "n_train": len(bank),
        "n_test": len(query),
        "image_size": settings.image_size,
        "checkpoints": scores,
        "per_layer": (
            {"checkpoint": first.label, "pooling": settings.pooling, "scores": layers} if layers else None
        ),
        "figures": figures,
    }
    write_json(out / "knn.json", payload)
    return payload


def _domain_metrics(
    features: np.ndarray, sample: DomainSample, settings: Settings, seed: int
) -> dict[str, Any]:
    from ssl_radiology.analysis.domains import domain_metrics

    if len(sample.counts()) < 2:
        raise UserError(
            f"domain analysis needs at least two domains; {sample.name} has only {list(sample.counts())}. "
            "Add another --data source (e.g. --data natural)"
        )
    return domain_metrics(features, sample.domains, seed=seed, num_threads=settings.num_threads)


def run_umap(
    backbones: Sequence[BackboneRef], sample: DomainSample, settings: Settings, out: Path, seed: int = 0
) -> dict[str, Any]:
    """One UMAP per backbone of all sampled images, coloured by domain, domain metrics in the caption."""
    from ssl_radiology.analysis.plots import plot_embedding
    from ssl_radiology.analysis.umap_view import knn_graph, umap_embedding

    n_neighbors = min(15, len(sample.domains) - 1)
    results, sentences = {}, []
    for backbone in backbones:
        features = final_features(backbone, sample, settings)
        metrics = _domain_metrics(features, sample, settings, seed)
        graph = knn_graph(features, n_neighbors, settings.num_threads)
        embedding = umap_embedding(features, seed=seed, n_neighbors=n_neighbors, knn=graph)
        sentence = domain_sentence(backbone.label, metrics)
        figure = out / f"umap_{slug(backbone.label)}.png"
        plot_embedding(
            embedding,
            sample.domains,
            figure,
            title=f"UMAP of {backbone.label} features",
            caption=sentence.replace("**", ""),
        )
        results[backbone.label] = {"figure": figure.name, "domain_metrics": metrics}
        sentences.append(sentence)
    caption = (
        f"UMAP (cosine, {n_neighbors} neighbours, seed {seed}) of the final features of "
        f"{len(sample.domains)} images coloured by domain: {domain_phrase(sample.counts())}. "
        + " ".join(sentences)
    )
    payload = {
        "analysis": "umap",
        "caption": caption,
        "data": sample.name,
        "domains": sample.counts(),
        "image_size": settings.image_size,
        "n_neighbors": n_neighbors,
        "seed": seed,
        "checkpoints": results,
    }
    write_json(out / "umap.json", payload)
    return payload


def run_domains(
    backbones: Sequence[BackboneRef], sample: DomainSample, settings: Settings, out: Path, seed: int = 0
) -> dict[str, Any]:
    """``domain_metrics`` of every backbone over the sampled domains; grouped bar chart."""
    from ssl_radiology.analysis.plots import plot_bars

    metrics = {
        b.label: _domain_metrics(final_features(b, sample, settings), sample, settings, seed)
        for b in backbones
    }
    figure = out / "domains.png"
    plot_bars(
        {key: {name: m[key] for name, m in metrics.items()} for key in DOMAIN_BARS},
        figure,
        title="How well the features separate " + ", ".join(sample.counts()),
        ylabel="value (higher = more domain-specific)",
    )
    first = next(iter(metrics.values()))
    caption = (
        f"Domain separation in the final features of {len(sample.domains)} images "
        f"({domain_phrase(sample.counts())}); higher values mean more domain-specific features. "
        + " ".join(domain_sentence(name, m) for name, m in metrics.items())
        + f" Chance levels: probe {fmt(first['chance_accuracy'])}, purity {fmt(first['knn_purity_chance'])}."
    )
    payload = {
        "analysis": "domains",
        "caption": caption,
        "data": sample.name,
        "domains": sample.counts(),
        "image_size": settings.image_size,
        "checkpoints": metrics,
        "figure": figure.name,
    }
    write_json(out / "domains.json", payload)
    return payload


def run_analysis(
    kind: str,
    backbones: Sequence[BackboneRef],
    data: Sequence[str],
    settings: Settings,
    out: Path,
    *,
    max_samples: int = 300,
    seed: int = 0,
    per_layer: bool = False,
) -> dict[str, Any]:
    """One analysis by name: ``knn`` on one labelled task, the others on a seeded sample of ``data``."""
    if kind not in ANALYSES:
        raise UserError(f"unknown analysis '{kind}' (choose from {', '.join(ANALYSES)})")
    backbones = distinct_labels(backbones)
    if kind == "knn":
        if len(data) != 1:
            raise UserError(f"knn evaluates on one labelled task; got --data {' '.join(data)}")
        return run_knn(backbones, data[0], settings, out, per_layer=per_layer)
    sample = sample_domains(data, settings.image_size, max_samples, seed)
    runner = {"cka": run_cka, "umap": run_umap, "domains": run_domains}[kind]
    return runner(backbones, sample, settings, out, seed=seed)
