"""Full fine-tuning of a backbone + linear head with the standard transfer recipe, trained to convergence.

AdamW with warm-up + cosine schedule; for ViTs layer-wise lr decay (timm ``param_groups_layer_decay``) so
early blocks move less than late ones; drop-path; label smoothing 0.1 for multi-class, (masked) BCE for
multi-label; light augmentation (random resized crop with a mild scale range + horizontal flip) done in
loader workers on physical values, intensity mapping batched on the device. The head starts as in MAE
(truncated normal, std 2e-5, zero bias), so the first steps do not push random gradients into the backbone.

Why a step budget: an epoch budget gives a handful of optimizer steps on a small training subset (1 %, k-shot),
and a model that never trained says nothing about its initialisation. The budget is
``max(min_steps, epochs × steps per epoch)`` optimizer steps per learning rate. A small grid of base learning
rates is tried; each run is evaluated ``evals`` times on the *validation* rows (never the test rows) and stopped
after ``patience`` evaluations without a lower validation loss. The learning rate and step with the lowest
validation loss win; their weights predict the query rows. ``converged`` is False when that best step was the
last evaluation, i.e. the loss was still falling when the budget ran out: results and report then say
"not converged". A plain loop rather than a Lightning Trainer: one small model per seed and subset, no
checkpoint-resume needed (a seed is the unit of resume), and no logger files.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms import v2

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.metrics import validation_loss
from ssl_radiology.features.extract import autocast, is_ct_mask, model_input


@dataclass(frozen=True)
class FinetuneConfig:
    min_steps: int = 1000  # optimizer steps per learning rate, however small the training set
    epochs: int = 30  # more steps than min_steps when 30 epochs are more (large training sets)
    base_lrs: tuple[float, ...] = (1e-3, 1e-2)  # grid; lr = base × batch / 256, chosen on validation
    evals: int = 20  # validation evaluations over the budget
    patience: int = 5  # evaluations without a lower validation loss before stopping
    warmup_fraction: float = 0.1
    batch_size: int = 64
    weight_decay: float = 0.05
    layer_decay: float = 0.75  # ViT only
    drop_path: float = 0.1
    label_smoothing: float = 0.1
    head_init_std: float = 2e-5  # MAE
    crop_scale: tuple[float, float] = (0.7, 1.0)
    flip: bool = True
    workers: int = 0

    def __post_init__(self) -> None:
        if self.min_steps < 1 or self.evals < 1 or self.patience < 1 or not self.base_lrs:
            raise UserError(
                "finetune settings: min_steps, evals and patience must be >= 1, base_lrs non-empty"
            )


class Augmented(Dataset):
    """Random resized crop + flip of one physical-value image (geometric only: cheap in a worker)."""

    def __init__(self, base: Dataset, image_size: int, scale: Sequence[float], flip: bool) -> None:
        ops: list[Any] = [v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True)]
        if flip:
            ops.append(v2.RandomHorizontalFlip())
        self.base, self.transform = base, v2.Compose(ops)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.base[i]
        return {**item, "image": self.transform(item["image"])}


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, n_classes: int, head_init_std: float = 2e-5) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, n_classes)
        # truncated at ±2 sd (torch's default bounds are ±2 absolute, i.e. no truncation at this scale)
        std = head_init_std
        nn.init.trunc_normal_(self.head.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def with_drop_path(backbone: nn.Module, drop_path: float) -> nn.Module:
    """The same weights in a copy built with stochastic depth (``load_backbone`` builds without it)."""
    from ssl_radiology.models import create_backbone

    name = getattr(backbone, "pretrained_cfg", {}).get("architecture")
    if drop_path <= 0 or name is None:
        return backbone
    size = getattr(getattr(backbone, "patch_embed", None), "img_size", None)  # ViTs: keep the pos-embed size
    fresh = create_backbone(name, drop_path_rate=drop_path, img_size=int(size[0]) if size else None)
    fresh.load_state_dict(backbone.state_dict())
    return fresh


def param_groups(model: Classifier, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """Layer-decayed groups for backbones timm can split into layers (ViTs), plain wd groups otherwise."""
    no_wd = set(getattr(model.backbone, "no_weight_decay", lambda: set())())
    is_vit = hasattr(model.backbone, "blocks") and hasattr(model.backbone, "group_matcher")
    if is_vit and cfg.layer_decay < 1:
        groups = param_groups_layer_decay(
            model.backbone,
            weight_decay=cfg.weight_decay,
            no_weight_decay_list=no_wd,
            layer_decay=cfg.layer_decay,
        )
    else:
        groups = param_groups_weight_decay(
            model.backbone, weight_decay=cfg.weight_decay, no_weight_decay_list=no_wd
        )
    return [*groups, {"params": list(model.head.parameters()), "weight_decay": 0.0}]


def _loss(kind: str, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, smoothing: float):
    if kind == "multiclass":
        return F.cross_entropy(logits, target, label_smoothing=smoothing)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * mask).sum() / mask.sum().clamp(min=1)


class _Labelled(Dataset):
    def __init__(self, base: Dataset, labels: np.ndarray, mask: np.ndarray) -> None:
        self.base, self.labels, self.mask = base, labels, mask

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.base[i], "target": self.labels[i], "mask": self.mask[i]}


def _loader(ds: Dataset, cfg: FinetuneConfig, shuffle: bool, seed: int, device: torch.device) -> DataLoader:
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        drop_last=shuffle and len(ds) > cfg.batch_size,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )


def _predict(model: nn.Module, loader: DataLoader, kind: str, image_size: int, window, device) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode(), autocast(device):
        for batch in loader:
            x = model_input(
                batch["image"].to(device), is_ct_mask(batch["modality"], device), image_size, window
            )
            logits = model(x).float()
            out.append((logits.softmax(1) if kind == "multiclass" else logits.sigmoid()).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


@dataclass
class _Run:
    """The best validation point of one learning rate."""

    base_lr: float
    val_loss: float
    best_step: int
    steps: int
    converged: bool
    state: dict[str, torch.Tensor]


def _batches(loader: DataLoader):
    """Batches forever (a new shuffled epoch whenever one ends): the budget is counted in steps."""
    while True:
        yield from loader


def _train_one(
    backbone: nn.Module,
    base_lr: float,
    loaders: tuple[DataLoader, DataLoader],
    kind: str,
    n_classes: int,
    val: tuple[np.ndarray, np.ndarray | None],
    *,
    image_size: int,
    window: Sequence[float],
    cfg: FinetuneConfig,
    seed: int,
    device: torch.device,
) -> _Run:
    """Fine-tune a fresh copy of ``backbone`` at one base lr; keep the weights of the best validation loss."""
    torch.manual_seed(seed)
    train_loader, val_loader = loaders
    model = Classifier(with_drop_path(copy.deepcopy(backbone), cfg.drop_path), n_classes, cfg.head_init_std)
    model = model.to(device)
    groups = param_groups(model, cfg)
    lr = base_lr * cfg.batch_size / 256
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    total = max(cfg.min_steps, cfg.epochs * len(train_loader))
    warmup = min(total - 1, int(cfg.warmup_fraction * total))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    every = max(1, math.ceil(total / cfg.evals))
    best = _Run(base_lr, math.inf, 0, 0, False, copy.deepcopy(model.state_dict()))
    last_eval, stale = 0, 0
    batches = _batches(train_loader)
    for step in range(1, total + 1):
        model.train()
        batch = next(batches)
        x = model_input(
            batch["image"].to(device, non_blocking=True),
            is_ct_mask(batch["modality"], device),
            image_size,
            window,
        )
        with autocast(device):
            logits = model(x).float()
        loss = _loss(kind, logits, batch["target"].to(device), batch["mask"].to(device), cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % every and step != total:
            continue
        last_eval = step
        probs = _predict(model, val_loader, kind, image_size, window, device)
        val_loss = validation_loss(kind, val[0], probs, val[1])
        if val_loss < best.val_loss:
            best = _Run(base_lr, val_loss, step, step, False, copy.deepcopy(model.state_dict()))
            stale = 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    best.steps, best.converged = last_eval, best.best_step != last_eval
    return best


def finetune(
    backbone: nn.Module,
    dataset: Dataset,
    labels: np.ndarray,
    label_mask: np.ndarray | None,
    kind: str,
    n_classes: int,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    query_idx: np.ndarray,
    *,
    image_size: int,
    window: Sequence[float],
    cfg: FinetuneConfig,
    seed: int,
    device: str | torch.device,
) -> tuple[np.ndarray, dict[str, float]]:
    """Fine-tune on ``train_idx`` per base lr, select lr and step on ``val_idx``; probabilities for ``query_idx``."""
    from ssl_radiology.models.raw_pixels import RawPixels

    if isinstance(backbone, RawPixels):
        raise UserError(
            "raw-pixels has no weights to fine-tune; fine-tune 'random' for the from-scratch baseline"
        )
    device = torch.device(device)
    mask = (
        np.ones((len(labels), n_classes), np.float32) if label_mask is None else label_mask.astype(np.float32)
    )
    targets = labels.astype(np.int64) if kind == "multiclass" else labels.astype(np.float32)
    labelled = _Labelled(dataset, targets, mask)
    train_ds = Augmented(Subset(labelled, train_idx.tolist()), image_size, cfg.crop_scale, cfg.flip)
    loaders = (
        _loader(train_ds, cfg, True, seed, device),
        _loader(Subset(labelled, val_idx.tolist()), cfg, False, seed, device),
    )
    val = (targets[val_idx], mask[val_idx] if label_mask is not None else None)
    settings = {"image_size": image_size, "window": window, "cfg": cfg, "seed": seed, "device": device}
    runs = [_train_one(backbone, float(lr), loaders, kind, n_classes, val, **settings) for lr in cfg.base_lrs]
    best = min(runs, key=lambda run: run.val_loss)
    model = Classifier(with_drop_path(copy.deepcopy(backbone), cfg.drop_path), n_classes).to(device)
    model.load_state_dict(best.state)
    query_loader = _loader(Subset(labelled, query_idx.tolist()), cfg, False, seed, device)
    probs = _predict(model, query_loader, kind, image_size, window, device)
    return probs, {
        "chosen_base_lr": best.base_lr,
        "val_loss": best.val_loss,
        "best_step": float(best.best_step),
        "steps": float(best.steps),
        "converged": float(best.converged),
    }
