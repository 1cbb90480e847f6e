"""Geometric views for self-supervision, made in DataLoader workers: random resized crops and flips.

Workers only crop and resize one ``(1, S, S)`` physical-value tensor (cheap); every intensity operation
runs batched on the training device (:mod:`ssl_radiology.transforms.device`). Values stay physical (HU or
0..65535), so a CT crop can still be windowed any way later.

Randomness comes from torch's global RNG, so views are reproducible from ``torch.manual_seed``:

- in the main process (``num_workers=0``) seeding once before iterating fixes every view;
- with workers, PyTorch seeds each worker's torch RNG with ``base_seed + worker_id`` where ``base_seed`` is
  drawn from the main process's RNG when the iterator starts; the same ``torch.manual_seed`` (or the
  loader's ``generator=``) and the same ``num_workers`` give the same views;
- for views independent of worker count and exactly resumable mid-epoch, seed per sample:
  ``with torch.random.fork_rng(devices=[]): torch.manual_seed(sample_seed); dataset[i]`` (what the
  pre-training data module does).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import RandomResizedCrop

from ssl_radiology.errors import UserError

#: aspect-ratio range of every random resized crop (the torchvision / DINO / SimCLR default)
CROP_RATIO = (3 / 4, 4 / 3)
#: DINO's local crops are 96 px when global crops are 224 px
LOCAL_FRACTION = 96 / 224


def _check_scale(name: str, scale: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(s) for s in scale)
    if not 0.0 < low <= high <= 1.0:
        raise UserError(f"views.{name} must satisfy 0 < min <= max <= 1, got {scale}")
    return low, high


class MultiCropViews:
    """``n_global`` crops at ``global_size`` and ``n_local`` crops at ``local_size`` of one image.

    Each crop covers a random fraction of the image area in ``*_scale`` with aspect ratio in 3/4..4/3
    (``RandomResizedCrop.get_params``), is resized bilinearly (antialiased when shrinking), and flipped left-right with
    probability ``flip_p``. Called on a ``(1, S, S)`` tensor; returns ``list[Tensor(1, size, size)]``,
    globals first.
    """

    def __init__(
        self,
        global_size: int,
        n_global: int = 2,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_size: int = 96,
        n_local: int = 0,
        local_scale: tuple[float, float] = (0.05, 0.4),
        flip_p: float = 0.5,
    ) -> None:
        if global_size <= 0 or (n_local and local_size <= 0) or n_global < 0 or n_local < 0:
            raise UserError(
                f"views: sizes and counts must be positive, got global {global_size}×{n_global}, "
                f"local {local_size}×{n_local}"
            )
        if not 0.0 <= flip_p <= 1.0:
            raise UserError(f"views.flip_p must be in [0, 1], got {flip_p}")
        self.crops = [(int(global_size), _check_scale("global_scale", global_scale))] * int(n_global)
        self.crops += [(int(local_size), _check_scale("local_scale", local_scale))] * int(n_local)
        self.flip_p = float(flip_p)

    def __call__(self, image: Tensor) -> list[Tensor]:
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"expected a (1, H, W) image, got shape {tuple(image.shape)}")
        views = []
        for size, scale in self.crops:
            top, left, height, width = RandomResizedCrop.get_params(image, list(scale), list(CROP_RATIO))
            crop = image[None, :, top : top + height, left : left + width]
            # Antialiasing only matters when shrinking; upsampling with it gives the same pixels 3× slower.
            shrink = height > size or width > size
            view = F.interpolate(
                crop, size=(size, size), mode="bilinear", antialias=shrink, align_corners=False
            )[0]
            if torch.rand(()) < self.flip_p:
                view = view.flip(-1)
            views.append(view)
        return views

    def __repr__(self) -> str:
        sizes = ", ".join(f"{size}px{scale}" for size, scale in self.crops)
        return f"MultiCropViews([{sizes}], flip_p={self.flip_p})"


def local_size_for(image_size: int, patch_size: int | None = 16) -> int:
    """DINO's local crop size scaled to ``image_size`` (96 at 224), rounded to a multiple of the patch size."""
    step = patch_size or 1
    return max(step, round(image_size * LOCAL_FRACTION / step) * step)


def dino_views(image_size: int, n_local: int = 8, patch_size: int | None = 16) -> MultiCropViews:
    """DINO multi-crop: 2 global crops, scale (0.4, 1), and ``n_local`` local crops, scale (0.05, 0.4)."""
    return MultiCropViews(
        image_size, 2, (0.4, 1.0), local_size_for(image_size, patch_size), n_local, (0.05, 0.4)
    )


def simclr_views(image_size: int) -> MultiCropViews:
    """SimCLR: two crops of scale (0.08, 1)."""
    return MultiCropViews(image_size, 2, (0.08, 1.0))


def mae_views(image_size: int) -> MultiCropViews:
    """MAE: one crop of scale (0.2, 1)."""
    return MultiCropViews(image_size, 1, (0.2, 1.0))


class MultiCropDataset(Dataset):
    """Wraps a PreparedDataset-like dataset: item ``i`` → ``{"views": [...], "is_ct": bool, "index": i}``.

    The default collate turns a batch into ``views`` = one ``(B, 1, h, w)`` tensor per view position and
    ``is_ct`` = a ``(B,)`` bool tensor, exactly what ``DeviceAugment`` takes.
    """

    def __init__(self, dataset: Dataset, views: MultiCropViews) -> None:
        self.dataset = dataset
        self.views = views

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        return {"views": self.views(item["image"]), "is_ct": item["modality"] == "CT", "index": index}
