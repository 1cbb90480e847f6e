"""Self-supervised methods as LightningModules, found by name in a registry (timm / solo-learn style).

Adding a method is one file and one YAML: ``ssl_radiology/methods/<name>.py`` with a subclass of
``SSLMethod`` decorated with ``@register_method("<name>")`` (its ``schema`` types every setting), and
``configs/method/<name>.yaml`` with the settings. Every module of this package is imported on the first
registry lookup, so no list elsewhere names the methods.

``settings`` is the resolved ``method`` section of the run config as a plain dict. Everything that can be
wrong with it is checked before any data is touched and reported as one ``UserError`` line naming the key.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from torch import nn

from ssl_radiology.errors import UserError

if TYPE_CHECKING:
    from ssl_radiology.methods.base import SSLMethod

M = TypeVar("M", bound="type[SSLMethod]")

_REGISTRY: dict[str, type[SSLMethod]] = {}
_discovered = False


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: make an ``SSLMethod`` subclass available as ``--method <name>``."""

    def add(cls: M) -> M:
        from ssl_radiology.methods.base import SSLMethod

        if not (isinstance(cls, type) and issubclass(cls, SSLMethod)):
            raise TypeError(f"@register_method('{name}') needs an SSLMethod subclass, got {cls!r}")
        known = _REGISTRY.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"method '{name}' is registered twice ({known.__qualname__}, {cls.__qualname__})"
            )
        cls.method_name = name
        _REGISTRY[name] = cls
        return cls

    return add


def _discover() -> None:
    """Import every module of this package once so that their ``@register_method`` decorators run."""
    global _discovered
    if _discovered:
        return
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    _discovered = True


def available_methods() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def method_class(name: Any) -> type[SSLMethod]:
    """The registered class of ``name``; a ``UserError`` listing the registered names otherwise."""
    _discover()
    if name not in _REGISTRY:
        raise UserError(f"--method: unknown method '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


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
    """Checks that need no model (``--dry-run``): the method name and its typed settings."""
    method_class(settings.get("name")).check_settings(settings)


def _check_backbone(cls: type[SSLMethod], settings: dict[str, Any]) -> int | None:
    """Backbone-dependent checks (sizes divisible by the patch, ViT-only methods); returns the patch size."""
    from ssl_radiology.models.backbones import patch_size_of, validate_image_size

    name = str(settings["backbone"])
    patch = patch_size_of(name)
    validate_image_size(name, int(settings["image_size"]), setting="--image-size")
    if int(settings["views"].get("n_local", 0)) > 0:
        validate_image_size(name, local_crop_size(settings, patch), setting="method.views.local_size")
    if cls.needs_patches and patch is None:
        raise UserError(
            f"method.backbone: {cls.method_name} needs a Vision Transformer backbone; '{name}' has no patches"
        )
    return patch


def create_method(name: str, settings: dict[str, Any]) -> SSLMethod:
    """Check the settings, then build the LightningModule of method ``name`` (backbones from timm)."""
    from ssl_radiology.models import create_backbone
    from ssl_radiology.transforms.presets import device_augment

    cls = method_class(name)
    settings = {**settings, "name": name}
    cls.check_settings(settings)
    patch = _check_backbone(cls, settings)
    augment = device_augment(str(settings["augment"]))
    backbone_name, image_size = str(settings["backbone"]), int(settings["image_size"])

    def backbone(drop_path: float | None = None) -> nn.Module:
        rate = float(settings["drop_path"]) if drop_path is None else float(drop_path)
        return create_backbone(
            backbone_name, in_chans=1, img_size=image_size if patch else None, drop_path_rate=rate
        )

    return cls.build(settings, augment, backbone)
