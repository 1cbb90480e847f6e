"""Grayscale radiology transforms: crops in loader workers, intensity work batched on the training device.

- :mod:`~ssl_radiology.transforms.intensity` — CT windows / X-ray scaling to [0, 1], ``normalize``,
  ``EvalTransform`` for deterministic evaluation input;
- :mod:`~ssl_radiology.transforms.views` — ``MultiCropViews`` / ``MultiCropDataset`` (random resized crops);
- :mod:`~ssl_radiology.transforms.device` — ``DeviceAugment`` (random windows, jitter, blur, noise, solarize);
- :mod:`~ssl_radiology.transforms.presets` — DINO / SimCLR / MAE recipes by name.
"""

from ssl_radiology.transforms.device import DeviceAugment, ViewRecipe
from ssl_radiology.transforms.intensity import WINDOWS, EvalTransform, normalize, to_unit
from ssl_radiology.transforms.presets import device_augment, multi_crop_views
from ssl_radiology.transforms.views import (
    MultiCropDataset,
    MultiCropViews,
    dino_views,
    mae_views,
    simclr_views,
)

__all__ = [
    "WINDOWS",
    "DeviceAugment",
    "EvalTransform",
    "MultiCropDataset",
    "MultiCropViews",
    "ViewRecipe",
    "device_augment",
    "dino_views",
    "mae_views",
    "multi_crop_views",
    "normalize",
    "simclr_views",
    "to_unit",
]
