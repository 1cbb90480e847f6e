"""Geometric views for self-supervision: random resized crops and flips, in loader workers or on the device.

Two paths share one random stream (:meth:`MultiCropViews.params`: crop boxes and flips drawn per sample):

- **loader crops** (``MultiCropDataset``): a worker crops and resizes one ``(1, S, S)`` physical-value
  tensor per view — the path for CPU runs;
- **device crops** (``CropBoxesDataset`` + :func:`crop_batch`): a worker only reads the memory-mapped slice
  and draws the boxes (microseconds); the training device cuts every view of the batch with
  ``torchvision.ops.roi_align`` (bilinear, averaging ``ceil(crop / size)``² samples per output pixel when
  shrinking, i.e. antialiased). A GPU consuming thousands of images per second then needs a few loader
  cores instead of one per ~165 images/s. Same boxes and flips as the loader path for the same sample seed;
  pixel values differ slightly at crop borders and in the antialiasing filter.

Every intensity operation runs batched on the training device (:mod:`ssl_radiology.transforms.device`).
Values stay physical (HU or 0..65535), so a CT crop can still be windowed any way later.

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

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import roi_align
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

    @property
    def sizes(self) -> list[int]:
        """Output size of each view position, globals first."""
        return [size for size, _ in self.crops]

    def params(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Random boxes ``(V, 4)`` as ``(top, left, height, width)`` pixels and flips ``(V,)`` for one image.

        Draws from torch's global RNG in a fixed order (crop, then flip, per view), so seeding per sample
        fixes both the loader and the device path.
        """
        boxes, flips = [], []
        for _, scale in self.crops:
            boxes.append(RandomResizedCrop.get_params(image, list(scale), list(CROP_RATIO)))
            flips.append(bool(torch.rand(()) < self.flip_p))
        return torch.tensor(boxes, dtype=torch.int64).view(-1, 4), torch.tensor(flips, dtype=torch.bool)

    def __call__(self, image: Tensor) -> list[Tensor]:
        if image.ndim != 3 or image.shape[0] != 1:
            raise ValueError(f"expected a (1, H, W) image, got shape {tuple(image.shape)}")
        boxes, flips = self.params(image)
        views = []
        for size, (top, left, height, width), flip in zip(self.sizes, boxes.tolist(), flips, strict=True):
            crop = image[None, :, top : top + height, left : left + width]
            # Antialiasing only matters when shrinking; upsampling with it gives the same pixels 3× slower.
            shrink = height > size or width > size
            view = F.interpolate(
                crop, size=(size, size), mode="bilinear", antialias=shrink, align_corners=False
            )[0]
            views.append(view.flip(-1) if flip else view)
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
        labels = {key: item[key] for key in ("label", "label_mask") if key in item}  # supervised sources
        views = self.views(item["image"])
        return {"views": views, "is_ct": item["modality"] == "CT", "index": index, **labels}


class CropBoxesDataset(Dataset):
    """Device-crop path, loader side: item ``i`` → the slice plus its views' boxes and flips.

    ``{"image": (1, S, S), "boxes": (V, 4), "flips": (V,), "is_ct": bool, "index": i}``; images of another
    size than ``size`` are resized once here (sources prepared at different sizes), so batches stack.
    :func:`crop_batch` cuts the views on the training device.
    """

    def __init__(self, dataset: Dataset, views: MultiCropViews, size: int) -> None:
        self.dataset = dataset
        self.views = views
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        image = item["image"]
        if image.shape[-2:] != (self.size, self.size):
            image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear", antialias=True)[
                0
            ]
        boxes, flips = self.views.params(image)
        return {
            "image": image,
            "boxes": boxes,
            "flips": flips,
            "is_ct": item["modality"] == "CT",
            "index": index,
        }


def crop_batch(images: Tensor, boxes: Tensor, flips: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """Cut view ``v`` of every image: ``images`` (B, 1, H, W), ``boxes`` (B, V, 4) as (top, left, height,
    width), ``flips`` (B, V) → ``V`` tensors (B, 1, size_v, size_v), on the images' device.

    One ``roi_align`` call per distinct output size (all global crops at once, all local crops at once).
    """
    batch, n_views = boxes.shape[:2]
    boxes = boxes.to(images.device, torch.float32)
    top, left, height, width = boxes.unbind(-1)
    index = torch.arange(batch, device=images.device, dtype=torch.float32)[:, None].expand(batch, n_views)
    rois = torch.stack([index, left, top, left + width, top + height], dim=-1)  # (B, V, 5), x1 y1 x2 y2
    flips = flips.to(images.device)
    views: list[Tensor | None] = [None] * n_views
    for size in sorted(set(sizes)):
        positions = [v for v, s in enumerate(sizes) if s == size]
        cut = roi_align(
            images.float(),
            rois[:, positions].transpose(0, 1).reshape(-1, 5),
            output_size=(size, size),
            spatial_scale=1.0,
            sampling_ratio=-1,
            aligned=True,
        ).view(len(positions), batch, images.shape[1], size, size)
        for k, v in enumerate(positions):
            view = cut[k]
            views[v] = torch.where(flips[:, v].view(-1, 1, 1, 1), view.flip(-1), view)
    return views  # type: ignore[return-value]
