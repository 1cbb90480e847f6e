"""Frozen-backbone features: model input, the batched extraction loop, pooled features and patch tokens.

Loader workers only read images; resizing and the intensity mapping (CT window / uint16 scaling, then the
single normalisation: ``transforms.intensity.EvalTransform``) run batched on the device. No augmentation:
kNN, linear probes, CKA and embeddings all need deterministic features. Caching lives one level up
(:mod:`~ssl_radiology.features.extractor`); this module only computes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ssl_radiology.errors import UserError
from ssl_radiology.features.cache import MODEL_POOLING, FeatureCache
from ssl_radiology.features.layers import pool_activation, prefix_tokens

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

#: pooling of final features: the backbone's own output, or its last tokens / map pooled by ``layers`` rules
FINAL_POOLINGS = (MODEL_POOLING, "cls", "mean")


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else CPU; a clear error for CUDA on a machine without it."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def model_input(
    images: torch.Tensor, is_ct: torch.Tensor, image_size: int, window: Sequence[float]
) -> torch.Tensor:
    """Physical-value batch (B, 1, H, W) -> normalised model input at ``image_size`` (``EvalTransform``,
    applied to the whole batch on the device)."""
    from ssl_radiology.transforms.intensity import EvalTransform

    return EvalTransform(image_size, (float(window[0]), float(window[1])))(images, is_ct)


def is_ct_mask(modalities: Sequence[str], device: torch.device) -> torch.Tensor:
    import torch

    return torch.tensor([m == "CT" for m in modalities], dtype=torch.bool, device=device)


def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA (as in training); full precision on CPU where bf16 matmuls are slow."""
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def model_batches(
    dataset: Dataset,
    *,
    image_size: int,
    window: Sequence[float],
    batch_size: int,
    device: str | torch.device,
    workers: int = 0,
    shuffle_seed: int | None = None,
) -> Iterator[torch.Tensor]:
    """Batches of model input on ``device``, in dataset order, or shuffled with ``shuffle_seed`` (minibatch
    CKA needs batches that mix domains)."""
    import torch
    from torch.utils.data import DataLoader

    device = resolve_device(device)
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle_seed is not None,
        generator=generator,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        yield model_input(images, is_ct_mask(batch["modality"], device), image_size, window)


def _pooled(backbone: nn.Module, x: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == MODEL_POOLING:
        return backbone(x)
    return pool_activation(backbone.forward_features(x), pooling, prefix_tokens(backbone))


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
    pooling: str = MODEL_POOLING,
) -> np.ndarray:
    """(N, D) float32 features of every item of ``dataset``, in order; read from / written to
    ``cache_dir/<key>.npy`` when both are given.

    ``pooling``: ``model`` (the backbone's output), ``cls`` or ``mean`` (of ``forward_features``, see
    :mod:`~ssl_radiology.features.layers`).
    """
    import torch

    if pooling not in FINAL_POOLINGS:
        raise UserError(f"unknown feature pooling '{pooling}' (choose from {', '.join(FINAL_POOLINGS)})")
    cache = FeatureCache(Path(cache_dir)) if cache_dir is not None and key is not None else None
    cached = cache.load(key, len(dataset)) if cache is not None else None
    if cached is not None:
        return cached
    device = resolve_device(device)
    backbone = backbone.to(device).eval()
    batches = model_batches(
        dataset, image_size=image_size, window=window, batch_size=batch_size, device=device, workers=workers
    )
    chunks = []
    with torch.inference_mode(), autocast(device):
        for x in batches:
            chunks.append(_pooled(backbone, x, pooling).float().cpu().numpy())
    features = np.concatenate(chunks).astype(np.float32, copy=False)
    if cache is not None:
        cache.save(key, features)
    return features


def extract_patch_tokens(
    backbone: nn.Module,
    dataset: Dataset,
    *,
    image_size: int,
    batch_size: int,
    device: str | torch.device,
    window: Sequence[float] = (40.0, 400.0),
    workers: int = 0,
) -> np.ndarray:
    """(N, T, C) float32 patch tokens of the last layer (``forward_features``; ViT class / register tokens
    dropped, a CNN's final map read as H·W tokens, row-major). Not cached: they are T times larger."""
    import torch

    if not hasattr(backbone, "forward_features"):
        raise UserError(
            f"patch tokens need a timm backbone; {type(backbone).__name__} has no forward_features"
        )
    device = resolve_device(device)
    backbone = backbone.to(device).eval()
    prefix = prefix_tokens(backbone)
    batches = model_batches(
        dataset, image_size=image_size, window=window, batch_size=batch_size, device=device, workers=workers
    )
    chunks = []
    with torch.inference_mode(), autocast(device):
        for x in batches:
            tokens = backbone.forward_features(x)
            tokens = tokens[:, prefix:] if tokens.ndim == 3 else tokens.flatten(2).transpose(1, 2)
            chunks.append(tokens.float().cpu().numpy())
    return np.concatenate(chunks).astype(np.float32, copy=False)
