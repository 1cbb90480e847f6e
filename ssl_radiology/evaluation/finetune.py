"""Full fine-tuning of a backbone + linear head with the standard transfer recipe.

AdamW with warm-up + cosine schedule; for ViTs layer-wise lr decay (timm ``param_groups_layer_decay``) so
early blocks move less than late ones; drop-path; label smoothing 0.1 for multi-class, (masked) BCE for
multi-label; light augmentation (random resized crop with a mild scale range + horizontal flip) done in
loader workers on physical values, intensity mapping batched on the device; early stopping on the validation
loss, restoring the best weights before predicting. A plain loop rather than a Lightning Trainer: one small
model per seed and subset, no checkpoint-resume needed (a seed is the unit of resume), and no logger files.
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

from ssl_radiology.evaluation.features import autocast, is_ct_mask, model_input
from ssl_radiology.evaluation.metrics import validation_loss


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 30
    batch_size: int = 64
    base_lr: float = 1e-3  # × batch / 256
    weight_decay: float = 0.05
    layer_decay: float = 0.75  # ViT only
    drop_path: float = 0.1
    label_smoothing: float = 0.1
    warmup_epochs: int = 3
    patience: int = 5
    crop_scale: tuple[float, float] = (0.7, 1.0)
    flip: bool = True
    workers: int = 0


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
    def __init__(self, backbone: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, n_classes)

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
    """Fine-tune on ``train_idx``, early-stop on ``val_idx``; probabilities for ``query_idx``."""
    device = torch.device(device)
    torch.manual_seed(seed)
    backbone = copy.deepcopy(backbone)  # the caller's weights serve the next seed unchanged
    model = Classifier(with_drop_path(backbone, cfg.drop_path), n_classes).to(device)
    mask = (
        np.ones((len(labels), n_classes), np.float32) if label_mask is None else label_mask.astype(np.float32)
    )
    targets = labels.astype(np.int64) if kind == "multiclass" else labels.astype(np.float32)
    labelled = _Labelled(dataset, targets, mask)
    train_ds = Augmented(Subset(labelled, train_idx.tolist()), image_size, cfg.crop_scale, cfg.flip)
    train_loader = _loader(train_ds, cfg, True, seed, device)
    val_loader = _loader(Subset(labelled, val_idx.tolist()), cfg, False, seed, device)
    groups = param_groups(model, cfg)
    lr = cfg.base_lr * cfg.batch_size / 256
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    total = max(1, cfg.epochs * len(train_loader))
    warmup = min(total - 1, cfg.warmup_epochs * len(train_loader))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    best_loss, best_state, best_epoch, stale = math.inf, copy.deepcopy(model.state_dict()), 0, 0
    val_targets, val_mask = targets[val_idx], mask[val_idx]
    for epoch in range(cfg.epochs):
        model.train()
        for batch in train_loader:
            x = model_input(
                batch["image"].to(device, non_blocking=True),
                is_ct_mask(batch["modality"], device),
                image_size,
                window,
            )
            with autocast(device):
                logits = model(x).float()
            loss = _loss(
                kind, logits, batch["target"].to(device), batch["mask"].to(device), cfg.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        probs = _predict(model, val_loader, kind, image_size, window, device)
        val_loss = validation_loss(kind, val_targets, probs, val_mask if label_mask is not None else None)
        if val_loss < best_loss:
            best_loss, best_state, best_epoch, stale = val_loss, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    query_loader = _loader(Subset(labelled, query_idx.tolist()), cfg, False, seed, device)
    probs = _predict(model, query_loader, kind, image_size, window, device)
    return probs, {"best_epoch": float(best_epoch), "val_loss": best_loss}
