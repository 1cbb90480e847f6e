"""Frozen-backbone features, extracted once per (checkpoint, task, image size, window) and cached on disk.

kNN and both linear protocols read the same cached array, so sweeping k, C or a learning rate never runs the
backbone again. Loader workers only read images; resizing and the intensity mapping (CT window / uint16
scaling, then the single normalisation: ``transforms.intensity.EvalTransform``) run batched on the device. No augmentation: the protocols require deterministic features.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


def feature_key(
    checkpoint_hash: str, task_fingerprint: str, image_size: int, window: Sequence[float], *extra
) -> str:
    """Cache key: everything that changes the feature values."""
    parts = [checkpoint_hash, task_fingerprint, int(image_size), [float(w) for w in window], *map(str, extra)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


def model_input(
    images: torch.Tensor, is_ct: torch.Tensor, image_size: int, window: Sequence[float]
) -> torch.Tensor:
    """Physical-value batch (B, 1, H, W) -> normalised model input at ``image_size`` (``EvalTransform``,
    applied to the whole batch on the device)."""
    from ssl_radiology.transforms.intensity import EvalTransform

    return EvalTransform(image_size, (float(window[0]), float(window[1])))(images, is_ct)


def is_ct_mask(modalities: Sequence[str], device: torch.device) -> torch.Tensor:
    return torch.tensor([m == "CT" for m in modalities], dtype=torch.bool, device=device)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (as in training); full precision on CPU where bf16 matmuls are slow."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    *,
    image_size: int,
    batch_size: int,
    device: str | torch.device,
    cache_dir: str | os.PathLike[str] | None = None,
    key: str | None = None,
    window: Sequence[float] = (40.0, 400.0),
    workers: int = 0,
) -> np.ndarray:
    """(N, D) float32 features of every item of ``dataset``, in order; loaded from the cache when present."""
    path = Path(cache_dir) / f"{key}.npy" if cache_dir is not None and key is not None else None
    if path is not None and path.is_file():
        cached = np.load(path)
        if len(cached) == len(dataset):
            return cached
    device = torch.device(device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    backbone = backbone.to(device).eval()
    chunks = []
    with torch.inference_mode(), autocast(device):
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            x = model_input(images, is_ct_mask(batch["modality"], device), image_size, window)
            chunks.append(backbone(x).float().cpu().numpy())
    features = np.concatenate(chunks).astype(np.float32, copy=False)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, features)
        os.replace(tmp, path)
    return features
