"""What ``ssl-rad knn``, ``linear-eval`` and ``finetune`` share: arguments, the per-seed loop and scoring.

Per seed: carve a validation split from the training patients (or use the dataset's official one), draw the
training subset (``--fraction`` stratified / ``--shots`` per class) from the rest, let the protocol predict
the test (and OOD) rows, score them overall, per subgroup and on the held-out site, and store the rows.
A seed whose result file exists is skipped, so an interrupted run is resumed by running it again.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ssl_radiology.config import apply_overrides, load_group
from ssl_radiology.data.sources import cache_root
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation import splits
from ssl_radiology.evaluation.features import extract_features, feature_key
from ssl_radiology.evaluation.metrics import classification_metrics, primary_metric
from ssl_radiology.evaluation.results import ResultStore, SeedKey
from ssl_radiology.evaluation.tasks import Task, load_task
from ssl_radiology.models import checkpoint_hash, load_backbone


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every evaluation command takes."""
    parser.add_argument(
        "--checkpoint", required=True, help="run dir | .ckpt | .safetensors | imagenet[:FILE] | random"
    )
    parser.add_argument(
        "--data", required=True, help="task: phantom-ct, phantom-xray, a task YAML, medmnist:FILE, ..."
    )
    parser.add_argument("--backbone", default=None, help="timm name (needed for random / imagenet)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="input size in pixels (default: the run's, else config)"
    )
    subset = parser.add_mutually_exclusive_group()
    subset.add_argument(
        "--fraction", type=float, default=1.0, help="stratified fraction of training patients"
    )
    subset.add_argument("--shots", type=int, default=None, help="k training samples per class instead")
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated seeds (>= 4 for statistics)")
    parser.add_argument("--out", default="eval-results", help="result folder (resumable)")
    parser.add_argument(
        "--name", default=None, help="display name of this condition (default: from the spec)"
    )
    parser.add_argument("--ood-split", action="store_true", help="hold out site ood.site; report the drop")
    parser.add_argument("--subgroups", default="", help="comma list of sex,age,site: metrics per subgroup")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument(
        "--feature-cache", default=None, help="feature cache folder (default: <cache>/features)"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (see configs/eval/)")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise UserError(f"--seeds must be comma-separated integers, got {text!r}") from exc
    if not seeds:
        raise UserError("--seeds is empty")
    return seeds


def parse_subgroups(text: str) -> list[str]:
    aliases = {"age": "age_band", "age_band": "age_band", "sex": "sex", "site": "site"}
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in aliases]
    if unknown:
        raise UserError(f"--subgroups: unknown {', '.join(unknown)} (choose from sex, age, site)")
    return [aliases[n] for n in names]


def default_name(spec: str, backbone: str | None) -> str:
    """A readable condition name: ``random-resnet18``, ``imagenet-resnet18``, or the run / file stem."""
    kind = spec.split(":", 1)[0]
    if kind in {"random", "imagenet"}:
        return f"{kind}-{backbone}" if backbone else kind
    path = Path(spec)
    if path.name in {"last.ckpt", "backbone.safetensors"} or path.parent.name == "checkpoints":
        return path.parents[1 if path.parent.name == "checkpoints" else 0].name
    return path.stem if path.suffix else path.name


def trained_image_size(spec: str) -> int | None:
    """The pre-training image size recorded beside an exported backbone (``backbone.json``), if any: the
    natural input size to evaluate it at when ``--image-size`` is not given."""
    path = Path(spec)
    for meta in (path / "backbone.json", path.with_suffix(".json")):
        if meta.is_file():
            try:
                return int(json.loads(meta.read_text())["image_size"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


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
    """The checkpoint under evaluation: its hash, its weights (random ones re-drawn per seed) and features."""

    def __init__(self, args: argparse.Namespace, task: Task, cfg: DictConfig, device: torch.device) -> None:
        self.spec, self.backbone_name, self.task, self.cfg, self.device = (
            args.checkpoint, args.backbone, task, cfg, device
        )  # fmt: skip
        self.is_random = self.spec == "random"
        if self.is_random and not self.backbone_name:
            raise UserError("--checkpoint random needs --backbone NAME")
        # Random weights are drawn per seed, so the condition is the architecture, not one set of weights.
        self.hash = (
            f"random-{self.backbone_name}"
            if self.is_random
            else checkpoint_hash(self.spec, backbone=self.backbone_name)
        )
        self.image_size = args.image_size
        self.cache_dir = Path(args.feature_cache) if args.feature_cache else cache_root() / "features"
        self._model: nn.Module | None = None

    def backbone(self, seed: int) -> nn.Module:
        if self.is_random:
            torch.manual_seed(seed)
            return load_backbone(self.spec, backbone=self.backbone_name, image_size=self.image_size)
        if self._model is None:
            self._model = load_backbone(self.spec, backbone=self.backbone_name, image_size=self.image_size)
        return self._model

    def features(self, seed: int) -> np.ndarray:
        window = tuple(self.cfg.window)
        weights = (
            checkpoint_hash(self.spec, backbone=self.backbone_name, seed=seed)
            if self.is_random
            else self.hash
        )
        key = feature_key(weights, self.task.fingerprint, self.image_size, window)
        return extract_features(
            self.backbone(seed),
            self.task.dataset,
            image_size=self.image_size,
            batch_size=int(self.cfg.batch_size),
            device=self.device,
            cache_dir=self.cache_dir,
            key=key,
            window=window,
            workers=int(self.cfg.workers),
        )


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
            task.kind, task.labels[idx], probs[rows], task.class_names, mask, n_boot, seed
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


Protocol = Callable[[SeedContext], dict[str, np.ndarray]]


def run_evaluation(args: argparse.Namespace, family: str, config_name: str, protocol: Protocol) -> int:
    """The whole command: load config and task, loop over seeds (skipping finished ones), store rows."""
    cfg = apply_overrides(load_group("eval", config_name), args.overrides)
    seeds = parse_seeds(args.seeds)
    subgroups = parse_subgroups(args.subgroups)
    fraction = None if args.shots else float(args.fraction)
    device = resolve_device(args.device)
    if args.image_size is None:
        args.image_size = trained_image_size(args.checkpoint) or int(cfg.image_size)
    ood_site = str(cfg.ood.site) if args.ood_split else None
    task = load_task(args.data, args.image_size, ood_site=ood_site)
    condition = Condition(args, task, cfg, device)
    name = args.name or default_name(args.checkpoint, args.backbone)
    store = ResultStore(args.out)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    config = {
        "command": family,
        "eval": resolved,
        "args": {k: v for k, v in vars(args).items() if k != "overrides"},
        "overrides": list(args.overrides),
        "task": {"name": task.name, "fingerprint": task.fingerprint, **task.info},
    }
    meta = {"checkpoint": args.checkpoint, "checkpoint_hash": condition.hash, "backbone": args.backbone or ""}
    query = np.concatenate([task.indices("test"), task.indices("ood")])
    for seed in seeds:
        key = SeedKey(name, family, task.name, fraction, args.shots, seed)
        if store.done(key, condition.hash):
            print(f"seed {seed}: already done ({store.seed_dir / key.filename}), skipped")
            continue
        train, val = draw_subsets(task, seed, args.fraction, args.shots, float(cfg.val_fraction))
        ctx = SeedContext(
            task=task, cfg=cfg, seed=seed, train=train, val=val, query=query, device=device,
            image_size=args.image_size, load_backbone=lambda s=seed: condition.backbone(s),
            features=lambda s=seed: condition.features(s), full_data=fraction == 1.0,
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
        path = store.write(key, meta, metrics, {**config, "seed": seed})
        headline = ", ".join(f"{p}: {_headline(task.kind, m)}" for p, m in metrics.items())
        print(f"seed {seed}: {headline} -> {path}")
    print(f"results: {store.root / 'results.csv'}")
    return 0


def _headline(kind: str, metrics: dict[str, Any]) -> str:
    key = primary_metric(kind)
    return f"{key} {metrics[key]:.4f}"
