"""Method name → augmentation recipe, so configs and the CLI can name a recipe (``augment: dino``)."""

from __future__ import annotations

from ssl_radiology.errors import UserError
from ssl_radiology.transforms.device import DeviceAugment, dino_augment, mae_augment, simclr_augment
from ssl_radiology.transforms.views import MultiCropViews, dino_views, mae_views, simclr_views

DEVICE_PRESETS = {"dino": dino_augment, "simclr": simclr_augment, "mae": mae_augment}


def device_augment(name: str, seed: int | None = None) -> DeviceAugment:
    """The device-side intensity recipe of a method (see :mod:`ssl_radiology.transforms.device`)."""
    if name not in DEVICE_PRESETS:
        raise UserError(f"unknown augmentation preset '{name}'; available: {', '.join(DEVICE_PRESETS)}")
    return DEVICE_PRESETS[name](seed)


def multi_crop_views(
    name: str, image_size: int, *, n_local: int = 8, patch_size: int | None = 16
) -> MultiCropViews:
    """The loader-side crops of a method; ``n_local`` / ``patch_size`` matter only for DINO."""
    if name == "dino":
        return dino_views(image_size, n_local, patch_size)
    if name == "simclr":
        return simclr_views(image_size)
    if name == "mae":
        return mae_views(image_size)
    raise UserError(f"unknown view preset '{name}'; available: dino, simclr, mae")
