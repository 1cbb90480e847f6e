"""Self-supervised methods as LightningModules: ``create_method(name, settings)``.

``settings`` is the resolved ``method`` section of the run config (``configs/method/<name>.yaml`` plus
overrides) as a plain dict. Everything that can be wrong with it is checked here, before any data is
touched, and reported as a ``UserError`` naming the setting.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ssl_radiology.errors import UserError

METHODS = ("dino", "mae", "simclr")


def local_crop_size(settings: dict[str, Any], patch: int | None) -> int:
    """``views.local_size``, or DINO's 96/224 of the image size rounded to the patch size."""
    from ssl_radiology.transforms.views import local_size_for

    size = settings["views"].get("local_size")
    return int(size) if size is not None else local_size_for(int(settings["image_size"]), patch)


def view_settings(settings: dict[str, Any], patch: int | None) -> dict[str, Any]:
    """Keyword arguments of ``transforms.views.MultiCropViews`` for this method."""
    views = settings["views"]
    return {
        "global_size": int(settings["image_size"]),
        "n_global": int(views["n_global"]),
        "global_scale": tuple(float(s) for s in views["global_scale"]),
        "local_size": local_crop_size(settings, patch),
        "n_local": int(views.get("n_local", 0)),
        "local_scale": tuple(float(s) for s in views["local_scale"]),
        "flip_p": float(views.get("flip_p", 0.5)),
    }


def validate(settings: dict[str, Any]) -> None:
    """Checks that need no model: method name, crop counts, sizes, numbers in range."""
    name = settings.get("name")
    if name not in METHODS:
        raise UserError(f"--method: unknown method '{name}'; available: {', '.join(METHODS)}")
    views = settings["views"]
    n_global, n_local = int(views["n_global"]), int(views.get("n_local", 0))
    if name == "simclr" and (n_global != 2 or n_local):
        raise UserError("method.views: SimCLR uses exactly 2 global views and no local crops")
    if name == "mae" and (n_global != 1 or n_local):
        raise UserError("method.views: MAE uses exactly 1 global view and no local crops")
    if name == "dino" and (n_global < 2 and n_global + n_local < 2):
        raise UserError("method.views: DINO needs at least 2 crops (n_global + n_local)")
    if name == "mae" and not 0.0 < float(settings["mask_ratio"]) < 1.0:
        raise UserError(f"method.mask_ratio must be in (0, 1), got {settings['mask_ratio']}")
    optimizer = str(settings["optimizer"].get("name", "adamw")).lower()
    if optimizer not in ("adamw", "lars"):
        raise UserError(f"method.optimizer.name: unknown optimizer '{optimizer}' (adamw or lars)")
    if int(settings["image_size"]) <= 0:
        raise UserError(f"--image-size must be positive, got {settings['image_size']}")


def create_method(name: str, settings: dict[str, Any]) -> nn.Module:
    """Build the LightningModule of method ``name`` (backbones via ``ssl_radiology.models``)."""
    from ssl_radiology.models import create_backbone
    from ssl_radiology.models.backbones import patch_size_of, validate_image_size
    from ssl_radiology.transforms.presets import device_augment

    settings = {**settings, "name": name}
    validate(settings)
    backbone_name, image_size = str(settings["backbone"]), int(settings["image_size"])
    patch = patch_size_of(backbone_name)
    validate_image_size(backbone_name, image_size, setting="--image-size")
    if name == "dino" and int(settings["views"].get("n_local", 0)) > 0:
        validate_image_size(
            backbone_name, local_crop_size(settings, patch), setting="method.views.local_size"
        )
    if name == "mae" and patch is None:
        raise UserError(
            f"method.backbone: MAE needs a Vision Transformer backbone; '{backbone_name}' has no patches"
        )
    augment = device_augment(str(settings.get("augment", name)))

    def backbone(drop_path: float = float(settings.get("drop_path", 0.0))) -> nn.Module:
        return create_backbone(
            backbone_name, in_chans=1, img_size=image_size if patch else None, drop_path_rate=drop_path
        )

    if name == "dino":
        from ssl_radiology.methods.dino import DINO

        return DINO(settings, augment, student=backbone(), teacher=backbone(0.0))
    if name == "simclr":
        from ssl_radiology.methods.simclr import SimCLR

        return SimCLR(settings, augment, backbone=backbone())
    from ssl_radiology.methods.mae import MAE

    return MAE(settings, augment, vit=backbone())
