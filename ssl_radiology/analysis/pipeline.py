"""Feature-space analyses across checkpoints and data sources: what ``ssl-rad analyze`` and the notebooks run.

The analysis modules (``cka``, ``layers``, ``knn``, ``domains``, ``umap_view``, ``plots``) are pure functions
on arrays; this module feeds them. It resolves checkpoint specs and ``--data`` names (prepared sources such as
``phantom`` / ``natural`` or labelled tasks such as ``phantom-ct``), draws a seeded sample per domain, gets
final features through the evaluation engine's :class:`~ssl_radiology.evaluation.runner.Condition` (same
cache folder, same key, same ``configs/eval/knn.yaml`` window and batch size as ``ssl-rad knn``, so the two
commands never extract the same features twice), and writes each analysis as JSON (with a Markdown
``caption`` that ``report.md`` embeds) plus PNG figures.

Domains: a source that mixes modalities is split by modality (CT → "CT slices", CR/DX → "X-ray"), the
``natural`` source is "natural photos", anything else is named after its source; a label that two
``--data`` entries share gets the entry's name appended, so every domain stays one source's images.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, default_collate

from ssl_radiology.errors import UserError

MODALITY_DOMAINS = {"CT": "CT slices", "CR": "X-ray", "DX": "X-ray", "MG": "mammography", "MR": "MR slices"}
NATURAL_DOMAIN = "natural photos"
REPORT_K = 20  # DESIGN.md §4: kNN accuracy is reported at k = 20


@dataclass(frozen=True)
class CheckpointSpec:
    """One backbone to analyse: a ``load_backbone`` spec, its display name, architecture and random seed."""

    spec: str
    name: str
    backbone: str | None = None
    seed: int = 0


@dataclass
class DomainSample:
    """Images from one or more ``--data`` entries with a domain label each.

    ``dataset`` items are ``{"image", "index", "modality"}`` like a ``PreparedDataset``; ``fingerprint``
    identifies exactly these images (feature-cache key), mirroring ``Task.fingerprint`` — it is all
    :class:`~ssl_radiology.evaluation.runner.Condition` reads besides ``dataset``.
    """

    dataset: Dataset
    domains: np.ndarray
    fingerprint: str
    name: str

    def counts(self) -> dict[str, int]:
        names, counts = np.unique(self.domains, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


@dataclass
class Settings:
    """What every analysis shares: input size, eval config (window, batch size, workers, kNN), device."""

    image_size: int
    cfg: DictConfig
    device: torch.device
    feature_cache: str | None = None

    @property
    def window(self) -> tuple[float, float]:
        return float(self.cfg.window[0]), float(self.cfg.window[1])


def load_settings(
    image_size: int | None = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
    feature_cache: str | None = None,
) -> Settings:
    """Settings from ``configs/eval/knn.yaml`` (the source of the shared feature window and kNN protocol)."""
    from ssl_radiology.config import apply_overrides, load_group
    from ssl_radiology.evaluation.runner import resolve_device

    cfg = apply_overrides(load_group("eval", "knn"), list(overrides))
    size = int(image_size if image_size is not None else cfg.image_size)
    return Settings(size, cfg, resolve_device(device), feature_cache)


def checkpoint_specs(
    specs: Sequence[str], names: Sequence[str] | None, backbone: str | None, seed: int = 0
) -> list[CheckpointSpec]:
    """Pair ``--checkpoint`` values with ``--name`` values (default: derived from the spec, made unique)."""
    from ssl_radiology.evaluation.runner import default_name

    if not specs:
        raise UserError("give at least one --checkpoint")
    if names and len(names) != len(specs):
        raise UserError(
            f"{len(names)} --name values for {len(specs)} --checkpoint values; give one per checkpoint"
        )
    if names:
        if len(set(names)) != len(names):
            raise UserError(f"--name values must be distinct, got {list(names)}")
        return [CheckpointSpec(s, n, backbone, seed) for s, n in zip(specs, names, strict=True)]
    seen: dict[str, int] = {}
    unique = []
    for name in (default_name(s, backbone) for s in specs):  # e.g. two run folders both called "dino"
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return [CheckpointSpec(s, n, backbone, seed) for s, n in zip(specs, unique, strict=True)]


def slug(name: str) -> str:
    """A file-name-safe form of a display name (``umap_<slug>.png``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "checkpoint"


# --------------------------------------------------------------------------------------------- data


def _is_source(entry: str) -> bool:
    from ssl_radiology.config import available
    from ssl_radiology.data.prepare import INFO_FILE
    from ssl_radiology.data.sources import split_selector

    name, _ = split_selector(entry)
    return name in available("data") or (Path(name).expanduser() / INFO_FILE).is_file()


def _source_part(entry: str) -> tuple[Dataset, list[str], Any, str]:
    """(dataset, modalities, identity for the fingerprint, kind) of an unlabelled source (``NAME[:MODALITY]``)."""
    from ssl_radiology.config import available, load_group
    from ssl_radiology.data.prepared import read_info
    from ssl_radiology.data.sources import open_source, split_selector

    name, modalities = split_selector(entry)
    dataset = open_source(entry)
    kind = str(load_group("data", name).get("kind")) if name in available("data") else "folder"
    identity = {"info": read_info(dataset.root), "modalities": modalities}
    return dataset, dataset.manifest["modality"].astype(str).tolist(), identity, kind


def _task_part(name: str, image_size: int) -> tuple[Dataset, list[str], Any, str]:
    from ssl_radiology.config import available
    from ssl_radiology.evaluation.tasks import load_task

    try:
        task = load_task(name, image_size)
    except UserError as exc:
        raise UserError(
            f"--data {name}: not a data source ({', '.join(available('data'))}) and {exc}"
        ) from exc
    manifest = getattr(task.dataset, "manifest", None)
    if manifest is None or "modality" not in manifest:
        modalities = [str(task.dataset[i]["modality"]) for i in range(len(task.dataset))]
    else:
        modalities = manifest["modality"].astype(str).tolist()
    return task.dataset, modalities, task.fingerprint, "task"


def _domain_labels(entry: str, modalities: Sequence[str], kind: str) -> np.ndarray:
    if kind == "natural":
        return np.full(len(modalities), NATURAL_DOMAIN, dtype=object)
    labels = [MODALITY_DOMAINS.get(m.upper(), "") for m in modalities]
    fallback = Path(entry).name or entry
    return np.array([label or fallback for label in labels], dtype=object)


def sample_domains(data: Sequence[str], image_size: int, max_per_domain: int, seed: int = 0) -> DomainSample:
    """At most ``max_per_domain`` images per domain (seeded, kept in dataset order) from all ``data`` entries."""
    from ssl_radiology.evaluation.tasks import fingerprint

    if not data:
        raise UserError("give at least one --data source")
    if max_per_domain < 2:
        raise UserError(f"--max-samples must be at least 2 per domain, got {max_per_domain}")
    rng = np.random.default_rng(seed)
    parts = []
    for entry in data:
        dataset, modalities, identity, kind = (
            _source_part(entry) if _is_source(entry) else _task_part(entry, image_size)
        )
        if len(dataset) == 0:
            raise UserError(f"--data {entry}: no images")
        parts.append((entry, dataset, _domain_labels(entry, modalities, kind), identity))
    owners: dict[str, set[str]] = {}
    for entry, _, labels, _ in parts:
        for label in set(labels):
            owners.setdefault(label, set()).add(entry)
    subsets, domains, identities = [], [], []
    for entry, dataset, labels, identity in parts:
        labels = np.array([f"{x} ({entry})" if len(owners[x]) > 1 else x for x in labels], dtype=object)
        rows = []
        for label in sorted(set(labels)):
            members = np.flatnonzero(labels == label)
            if len(members) > max_per_domain:
                members = np.sort(rng.choice(members, max_per_domain, replace=False))
            rows.append(members)
        chosen = np.sort(np.concatenate(rows))
        subsets.append(Subset(dataset, chosen.tolist()))
        domains.append(labels[chosen])
        identities.append([identity, chosen.tolist()])
    return DomainSample(
        dataset=ConcatDataset(subsets),
        domains=np.concatenate(domains).astype(str),
        fingerprint=fingerprint("analysis-sample", identities),
        name=" + ".join(data),
    )


# ----------------------------------------------------------------------------------------- features


def _condition(checkpoint: CheckpointSpec, target: Any, settings: Settings):
    """The evaluation engine's feature helper for one checkpoint on a task or :class:`DomainSample`."""
    from ssl_radiology.evaluation.runner import Condition

    args = argparse.Namespace(
        checkpoint=checkpoint.spec,
        backbone=checkpoint.backbone,
        image_size=settings.image_size,
        feature_cache=settings.feature_cache,
    )
    return Condition(args, target, settings.cfg, settings.device)


def final_features(checkpoint: CheckpointSpec, target: Any, settings: Settings) -> np.ndarray:
    """(N, D) cached backbone features of every image of ``target`` (a task or a :class:`DomainSample`)."""
    return _condition(checkpoint, target, settings).features(checkpoint.seed)


def load_model(checkpoint: CheckpointSpec, settings: Settings) -> nn.Module:
    """The backbone with exactly the weights :func:`final_features` used (random ones drawn from its seed)."""
    from ssl_radiology.evaluation.runner import Condition

    args = argparse.Namespace(
        checkpoint=checkpoint.spec,
        backbone=checkpoint.backbone,
        image_size=settings.image_size,
        feature_cache=None,
    )
    target = argparse.Namespace(dataset=None, fingerprint="")
    return (
        Condition(args, target, settings.cfg, settings.device).backbone(checkpoint.seed).to(settings.device)
    )


class _ModelInput:
    """Collate function: stack items, then window / scale / resize / normalise as feature extraction does."""

    def __init__(self, settings: Settings) -> None:
        self.image_size, self.window, self.device = settings.image_size, settings.window, settings.device

    def __call__(self, items: list[dict]) -> torch.Tensor:
        from ssl_radiology.evaluation.features import is_ct_mask, model_input

        batch = default_collate(items)
        images = batch["image"].to(self.device)
        return model_input(images, is_ct_mask(batch["modality"], self.device), self.image_size, self.window)


def model_loader(dataset: Dataset, settings: Settings, shuffle_seed: int | None = None) -> DataLoader:
    """Batches of model input; ``shuffle_seed`` mixes domains within batches (minibatch CKA needs that)."""
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(
        dataset,
        batch_size=int(settings.cfg.batch_size),
        shuffle=shuffle_seed is not None,
        generator=generator,
        collate_fn=_ModelInput(settings),
    )


@torch.inference_mode()
def layer_features(
    model: nn.Module, dataset: Dataset, settings: Settings, patterns: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """``{layer name: (N, C) pooled activations}`` of the default (or given) layers, plus ``"output"``.

    Pooling and default layers are those of :mod:`ssl_radiology.analysis.layers`, so per-layer kNN and
    the layer-wise CKA heatmap describe the same vectors.
    """
    from ssl_radiology.analysis.layers import pool_activation, select_layers

    names = select_layers(model, patterns)
    modules = dict(model.named_modules())
    latest: dict[str, torch.Tensor] = {}
    collected: dict[str, list[np.ndarray]] = {name: [] for name in [*names, "output"]}

    def hook(name: str):
        def record(_module: nn.Module, _inputs: tuple, output: Any) -> None:
            latest[name] = pool_activation(output).float()

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    was_training = model.training
    try:
        model.eval()
        for images in model_loader(dataset, settings):
            collected["output"].append(model(images).float().cpu().numpy())
            for name in names:
                collected[name].append(latest.pop(name).cpu().numpy())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: np.concatenate(chunks) for name, chunks in collected.items()}


# ----------------------------------------------------------------------------------------- analyses


def _num_threads(settings: Settings) -> int | None:
    threads = settings.cfg.get("threads")
    return None if threads is None else int(threads)


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _domain_phrase(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} ({n})" for name, n in counts.items())


def run_cka(
    checkpoints: Sequence[CheckpointSpec], sample: DomainSample, settings: Settings, out: Path, seed: int = 0
) -> dict[str, Any]:
    """Layer-wise CKA heatmap of the first two checkpoints and final-feature linear CKA of every pair."""
    from ssl_radiology.analysis.cka import linear_cka
    from ssl_radiology.analysis.layers import layer_cka
    from ssl_radiology.analysis.plots import plot_cka_heatmap

    if len(checkpoints) < 2:
        raise UserError("cka compares checkpoints: give at least two --checkpoint values")
    first, second = checkpoints[:2]
    matrix, names_x, names_y = layer_cka(
        load_model(first, settings),
        load_model(second, settings),
        model_loader(sample.dataset, settings, shuffle_seed=seed),
        device=settings.device,
    )
    figure = out / f"cka_{slug(first.name)}_vs_{slug(second.name)}.png"
    plot_cka_heatmap(
        matrix, names_x, names_y, figure, title=f"CKA: {first.name} (rows) vs {second.name} (columns)"
    )
    features = {c.name: final_features(c, sample, settings) for c in checkpoints}
    pairs = []
    for i, a in enumerate(checkpoints):
        for b in checkpoints[i + 1 :]:
            pairs.append(
                {
                    "a": a.name,
                    "b": b.name,
                    "linear_cka": linear_cka(features[a.name], features[b.name]),
                    "linear_cka_debiased": linear_cka(features[a.name], features[b.name], debiased=True),
                }
            )
    diagonal = np.diag(matrix) if matrix.shape[0] == matrix.shape[1] else np.array([])
    pair_text = "; ".join(f"{p['a']} vs {p['b']} {_fmt(p['linear_cka'])}" for p in pairs)
    caption = (
        f"Layer-wise linear CKA (unbiased minibatch estimator, Nguyen et al. 2021) between **{first.name}** "
        f"(rows, {len(names_x)} layers) and **{second.name}** (columns, {len(names_y)} layers) over "
        f"{len(sample.domains)} images: {_domain_phrase(sample.counts())}. "
        + (f"Matching layers average CKA {_fmt(float(np.nanmean(diagonal)))}; " if diagonal.size else "")
        + f"last layers {_fmt(float(matrix[-1, -1]))}. Final-feature linear CKA: {pair_text} "
        "(1 = same representation up to rotation and scale)."
    )
    payload = {
        "analysis": "cka",
        "caption": caption,
        "data": sample.name,
        "domains": sample.counts(),
        "image_size": settings.image_size,
        "x": first.name,
        "y": second.name,
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
    from ssl_radiology.evaluation.knn import knn_probabilities
    from ssl_radiology.evaluation.metrics import classification_metrics, primary_metric

    probs = knn_probabilities(
        features[bank],
        task.labels[bank],
        features[query],
        task.kind,
        len(task.class_names),
        ks=(REPORT_K,),
        temperature=float(settings.cfg.temperature),
        num_threads=_num_threads(settings),
    )[REPORT_K]
    mask = None if task.label_mask is None else task.label_mask[query]
    metrics = classification_metrics(task.kind, task.labels[query], probs, task.class_names, mask, 0)
    return float(metrics[primary_metric(task.kind)])


def run_knn(
    checkpoints: Sequence[CheckpointSpec],
    task_name: str,
    settings: Settings,
    out: Path,
    per_layer: bool = False,
) -> dict[str, Any]:
    """kNN (DINO protocol, k = 20) per checkpoint on a labelled task; optionally per layer of the first one.

    Bank = the task's whole training split, queries = its test split: the numbers equal ``ssl-rad knn`` at
    ``--fraction 1`` for the same seed (same cached features).
    """
    from ssl_radiology.evaluation.metrics import primary_metric
    from ssl_radiology.evaluation.tasks import load_task

    task = load_task(task_name, settings.image_size)
    bank, query = task.indices("train"), task.indices("test")
    if not len(bank) or not len(query):
        raise UserError(f"task {task.name}: kNN needs training and test images ({len(bank)} / {len(query)})")
    metric = primary_metric(task.kind)
    scores = {
        c.name: _knn_headline(task, bank, query, final_features(c, task, settings), settings)
        for c in checkpoints
    }
    figure = out / "knn.png"
    plot_bars({metric: scores}, figure, title=f"kNN (k={REPORT_K}) on {task.name}", ylabel=metric)
    figures = [figure.name]
    layers: dict[str, float] = {}
    if per_layer:
        first = checkpoints[0]
        per = layer_features(load_model(first, settings), task.dataset, settings)
        layers = {name: _knn_headline(task, bank, query, values, settings) for name, values in per.items()}
        layer_figure = out / f"knn_layers_{slug(first.name)}.png"
        plot_bars(
            {metric: layers},
            layer_figure,
            title=f"kNN per layer of {first.name} on {task.name}",
            ylabel=metric,
        )
        figures.append(layer_figure.name)
    ranked = ", ".join(f"**{name}** {_fmt(v)}" for name, v in sorted(scores.items(), key=lambda kv: -kv[1]))
    caption = (
        f"Weighted kNN (DINO protocol: cosine, k = {REPORT_K}, T = {float(settings.cfg.temperature):g}) on "
        f"{task.name} ({len(bank)} training, {len(query)} test images), {metric}: {ranked}."
    )
    if layers:
        best = max(layers, key=lambda n: layers[n] if np.isfinite(layers[n]) else -np.inf)
        caption += (
            f" Per layer of {checkpoints[0].name}: from {_fmt(next(iter(layers.values())))} at "
            f"{next(iter(layers))} to {_fmt(layers['output'])} at the output; best {best} ({_fmt(layers[best])})."
        )
    payload = {
        "analysis": "knn",
        "caption": caption,
        "task": task.name,
        "metric": metric,
        "k": REPORT_K,
        "temperature": float(settings.cfg.temperature),
        "n_train": len(bank),
        "n_test": len(query),
        "image_size": settings.image_size,
        "checkpoints": scores,
        "per_layer": {"checkpoint": checkpoints[0].name, "scores": layers} if layers else None,
        "figures": figures,
    }
    write_json(out / "knn.json", payload)
    return payload


def _metrics_sentence(name: str, m: dict[str, Any]) -> str:
    return (
        f"**{name}**: linear probe tells the domains apart with accuracy {_fmt(m['probe_accuracy'])} "
        f"(chance {_fmt(m['chance_accuracy'])}), kNN domain purity {_fmt(m['knn_purity'])} "
        f"(chance {_fmt(m['knn_purity_chance'])}), proxy A-distance {_fmt(m['proxy_a_distance'])}, "
        f"silhouette {_fmt(m['silhouette'])}."
    )


def _domain_metrics(
    features: np.ndarray, sample: DomainSample, settings: Settings, seed: int
) -> dict[str, Any]:
    from ssl_radiology.analysis.domains import domain_metrics

    if len(sample.counts()) < 2:
        raise UserError(
            f"domain analysis needs at least two domains; {sample.name} has only {list(sample.counts())}. "
            "Add another --data source (e.g. --data natural)"
        )
    return domain_metrics(features, sample.domains, seed=seed, num_threads=_num_threads(settings))


def run_umap(
    checkpoints: Sequence[CheckpointSpec], sample: DomainSample, settings: Settings, out: Path, seed: int = 0
) -> dict[str, Any]:
    """One UMAP per checkpoint of all sampled images, coloured by domain, domain metrics in the caption."""
    from ssl_radiology.analysis.plots import plot_embedding
    from ssl_radiology.analysis.umap_view import knn_graph, umap_embedding

    n_neighbors = min(15, len(sample.domains) - 1)
    results, sentences = {}, []
    for checkpoint in checkpoints:
        features = final_features(checkpoint, sample, settings)
        metrics = _domain_metrics(features, sample, settings, seed)
        graph = knn_graph(features, n_neighbors, _num_threads(settings))
        embedding = umap_embedding(features, seed=seed, n_neighbors=n_neighbors, knn=graph)
        sentence = _metrics_sentence(checkpoint.name, metrics)
        figure = out / f"umap_{slug(checkpoint.name)}.png"
        plot_embedding(
            embedding,
            sample.domains,
            figure,
            title=f"UMAP of {checkpoint.name} features",
            caption=sentence.replace("**", ""),
        )
        results[checkpoint.name] = {"figure": figure.name, "domain_metrics": metrics}
        sentences.append(sentence)
    caption = (
        f"UMAP (cosine, {n_neighbors} neighbours, seed {seed}) of the final features of "
        f"{len(sample.domains)} images coloured by domain: {_domain_phrase(sample.counts())}. "
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


DOMAIN_BARS = ("probe_accuracy", "knn_purity", "proxy_a_distance", "silhouette")


def run_domains(
    checkpoints: Sequence[CheckpointSpec], sample: DomainSample, settings: Settings, out: Path, seed: int = 0
) -> dict[str, Any]:
    """``domain_metrics`` of every checkpoint over the sampled domains; grouped bar chart."""
    metrics = {
        c.name: _domain_metrics(final_features(c, sample, settings), sample, settings, seed)
        for c in checkpoints
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
        f"({_domain_phrase(sample.counts())}); higher values mean more domain-specific features. "
        + " ".join(_metrics_sentence(name, m) for name, m in metrics.items())
        + f" Chance levels: probe {_fmt(first['chance_accuracy'])}, purity {_fmt(first['knn_purity_chance'])}."
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


# ------------------------------------------------------------------------------------------ outputs


def plot_bars(groups: dict[str, dict[str, float]], path: Path, title: str, ylabel: str) -> Path:
    """Bars of ``{group: {name: value}}``, values printed on top.

    One group (kNN per checkpoint or per layer): the names label the x axis. Several groups (domain
    metrics): one cluster per group, one colour per name, with a legend.
    """
    from matplotlib.figure import Figure

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
        ax.bar_label(bars, labels=[_fmt(v) for v in values], fontsize="x-small", padding=2)
    ticks = names if single else list(groups)
    ax.set_xticks(range(len(ticks)), ticks, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.margins(y=0.15)
    if not single:
        ax.legend(fontsize="small", frameon=False, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=150, bbox_inches="tight")
    return path


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
