"""What ``ssl-rad knn``, ``linear-eval`` and ``finetune`` share: the per-seed loop and scoring.

It takes an :class:`~ssl_radiology.api.types.EvalRequest` (the commands, experiment cells and notebooks all
build one); the protocols themselves are in :mod:`~.protocols`.

Per seed: carve a validation split from the training patients (or use the dataset's official one), draw the
training subset (``--fraction`` stratified / ``--shots`` per class) from the rest, let the protocol predict
the test (and OOD) rows, score them overall, per subgroup and on the held-out site, and store the rows.
A seed whose result file exists is skipped, so an interrupted run is resumed by running it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ssl_radiology.api.types import BackboneRef, EvalRequest, EvalResult, default_name
from ssl_radiology.config import apply_overrides, load_group
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation import protocols, splits
from ssl_radiology.evaluation.config_checks import check_eval_config
from ssl_radiology.evaluation.leakage import check_overlap
from ssl_radiology.evaluation.metrics import classification_metrics, primary_metric
from ssl_radiology.evaluation.results import ResultStore, SeedKey, collect_predictions
from ssl_radiology.evaluation.tasks import Task, load_task, save_skipped
from ssl_radiology.features.extract import resolve_device
from ssl_radiology.features.extractor import FeatureExtractor, FeatureOptions, trained_image_size
from ssl_radiology.models import provenance
from ssl_radiology.models.raw_pixels import reduce_features

#: eval config (configs/eval/<name>.yaml) of each protocol
_CONFIGS = {"knn": "knn", "linear": "linear", "finetune": "finetune"}
__all__ = [
    "Condition",
    "SeedContext",
    "default_name",
    "draw_subsets",
    "resolve_device",
    "run_evaluation",
    "score",
    "trained_image_size",
]


@dataclass
class SeedContext:
    """Everything a protocol needs for one seed."""

    task: Task
    cfg: DictConfig
    seed: int
    train: np.ndarray
    val: np.ndarray
    query: np.ndarray
    device: torch.device
    image_size: int
    load_backbone: Callable[[], nn.Module]
    features: Callable[[], np.ndarray]
    full_data: bool
    extras: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def fit_rows(self) -> np.ndarray:
        """Rows of the final fit: train + validation with the full training set; with a data fraction or
        k shots only the drawn subset, so that a "1 %" result never trains on more than 1 % of the data
        (validation rows then serve model selection only)."""
        return np.sort(np.concatenate([self.train, self.val])) if self.full_data else self.train

    @property
    def window(self) -> tuple[float, float]:
        return (float(self.cfg.window[0]), float(self.cfg.window[1]))


class Condition:
    """The checkpoint under evaluation: its hash, its weights (random ones re-drawn per seed) and features,
    through the feature layer that analysis and ``ssl-rad embed`` share (same cache, same keys). Built
    before the task is loaded, so a checkpoint that does not exist fails before any data work."""

    def __init__(
        self,
        ref: BackboneRef,
        cfg: DictConfig,
        device: torch.device,
        image_size: int,
        feature_cache: str | None = None,
    ) -> None:
        window = (float(cfg.window[0]), float(cfg.window[1]))
        options = FeatureOptions(
            image_size, window, int(cfg.batch_size), int(cfg.workers), device, feature_cache
        )
        self.extractor = FeatureExtractor(ref, options)
        # Random weights are drawn per seed, so the condition is the architecture, not one set of weights.
        self.hash = self.extractor.hash

    def backbone(self, seed: int) -> nn.Module:
        return self.extractor.model(seed)

    def features(self, task: Task, seed: int) -> np.ndarray:
        return self.extractor.features(task.dataset, task.fingerprint, seed)


def draw_subsets(task: Task, seed: int, fraction: float, shots: int | None, val_fraction: float):
    """(train, val) row indices for one seed; the test split is never used here.

    The validation patients are carved first (or the official validation split is used), then the
    fraction / k-shot subset is drawn from the remaining training patients.
    """
    pool = task.indices("train")
    if not len(pool):
        raise UserError(f"task {task.name}: no training images")
    official_val = task.indices("val")
    if len(official_val):
        train_pool, val = pool, official_val
    else:
        train_pool, val = splits.validation_split(task.patients, pool, seed, val_fraction)
    if shots:
        train = splits.k_shot(task.labels, train_pool, shots, seed, task.kind, task.class_names)
    else:
        train = splits.stratified_fraction(
            task.labels, task.patients, train_pool, fraction, seed, task.kind, task.class_names
        )
    return train, val


def score(
    task: Task,
    query: np.ndarray,
    probs: np.ndarray,
    subgroups: list[str],
    bootstrap: int,
    seed: int,
) -> dict[str, float]:
    """Test metrics (unprefixed), ``ood/...`` and ``ood_drop/...``, ``<attr>=<value>/...`` and ``gap[<attr>]/...``."""
    split = task.split[query]

    def metrics_of(rows: np.ndarray, n_boot: int) -> dict[str, float]:
        idx = query[rows]
        mask = None if task.label_mask is None else task.label_mask[idx]
        return classification_metrics(
            task.kind, task.labels[idx], probs[rows], task.class_names, mask, n_boot, seed, task.patients[idx]
        )

    test_rows = split == "test"
    if not test_rows.any():
        raise UserError(f"task {task.name}: the test split is empty")
    out = metrics_of(test_rows, bootstrap)
    ood_rows = split == "ood"
    if ood_rows.any():
        ood = metrics_of(ood_rows, bootstrap)
        out.update({f"ood/{m}": v for m, v in ood.items()})
        out.update({f"ood_drop/{m}": out[m] - v for m, v in ood.items() if "_ci_" not in m})
    for attr in subgroups:
        values = task.groups[attr].to_numpy()[query]
        per_group: dict[str, dict[str, float]] = {}
        for value in sorted(set(values[test_rows])):
            per_group[value] = metrics_of(test_rows & (values == value), 0)
            out.update({f"{attr}={value}/{m}": v for m, v in per_group[value].items()})
        for m in next(iter(per_group.values()), {}):
            finite = [g[m] for g in per_group.values() if np.isfinite(g[m])]
            out[f"gap[{attr}]/{m}"] = float(max(finite) - min(finite)) if len(finite) > 1 else float("nan")
    return out


def run_evaluation(request: EvalRequest, protocol: protocols.Protocol | None = None) -> EvalResult:
    """The whole evaluation: load config and task, loop over seeds (skipping finished ones), store rows.

    ``protocol`` replaces the request's protocol function (tests, custom heads) under the same family.
    """
    request.check()
    cfg = apply_overrides(load_group("eval", _CONFIGS[request.protocol]), request.overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    check_eval_config(_CONFIGS[request.protocol], resolved)  # type: ignore[arg-type]
    head = request.head or (str(cfg.head) if request.protocol == "linear" else "")
    family, chosen = protocols.select(request.protocol, head)
    protocol = protocol or chosen
    subgroups = request.subgroup_columns
    fraction = None if request.shots else float(request.fraction)
    device = resolve_device(request.device)
    ref = request.backbone
    image_size = request.image_size or trained_image_size(ref.spec) or int(cfg.image_size)
    condition = Condition(ref, cfg, device, image_size, request.feature_cache)
    ood_site = str(cfg.ood.site) if request.ood_split else None
    task = load_task(request.data, image_size, ood_site=ood_site)
    name = ref.label
    store = ResultStore(request.out)
    skipped_note = save_skipped(task, store.root)  # images the task could not use: file keys + reasons
    config = {
        "command": family,
        "eval": resolved,
        "request": {**asdict(request), "image_size": image_size},
        "command_line": request.command_line(),
        "task": {
            "name": task.name,
            "fingerprint": task.fingerprint,
            **task.info,
            "skipped": len(task.skipped),
        },
    }
    meta = {
        "checkpoint": ref.spec,
        "checkpoint_hash": condition.hash,
        "backbone": ref.architecture or "",
        "overlap": check_overlap(ref.spec, task.name, task.split, task.patients, request.allow_overlap),
        **provenance.row_fields(ref.spec),
    }
    query = np.concatenate([task.indices("test"), task.indices("ood")])
    result = EvalResult(out=store.root, results_csv=store.root / "results.csv")
    for seed in request.seeds:
        key = SeedKey(name, family, task.name, fraction, request.shots, seed, request.pretrain_seed)
        if store.done(key, condition.hash):
            print(f"seed {seed}: already done ({store.seed_dir / key.filename}), skipped")
            result.skipped.append(seed)
            continue
        train, val = draw_subsets(task, seed, request.fraction, request.shots, float(cfg.val_fraction))
        ctx = SeedContext(
            task=task, cfg=cfg, seed=seed, train=train, val=val, query=query, device=device,
            image_size=image_size, load_backbone=lambda s=seed: condition.backbone(s),
            features=lambda s=seed, t=train: reduce_features(ref.spec, condition.features(task, s), t, s),
            full_data=fraction == 1.0,
        )  # fmt: skip
        predictions = protocol(ctx)
        metrics = {
            p: {
                **score(task, query, probs, subgroups, int(cfg.bootstrap), seed),
                **ctx.extras.get(p, {}),
                "n_train": len(train),
            }
            for p, probs in predictions.items()
        }
        stored = collect_predictions(task, query, predictions)
        path = store.write(key, meta, metrics, {**config, "seed": seed}, stored)
        headline = ", ".join(f"{p}: {_headline(task.kind, m)}" for p, m in metrics.items())
        print(f"seed {seed}: {headline} -> {path}")
        result.done.append(seed)
        result.headline[seed] = {p: float(m[primary_metric(task.kind)]) for p, m in metrics.items()}
    if skipped_note:
        print(skipped_note)
    print(f"results: {result.results_csv}")
    return result


def _headline(kind: str, metrics: dict[str, Any]) -> str:
    key = primary_metric(kind)
    return f"{key} {metrics[key]:.4f}"
