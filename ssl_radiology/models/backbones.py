"""Create 1-channel timm backbones, randomly initialised or with ImageNet weights.

Every model in the toolkit is ``timm.create_model(name, in_chans=1, num_classes=0)``: radiology images are
grayscale, so the stem takes one channel (timm sums ImageNet RGB stem weights over the colour axis when it
loads them, ``adapt_input_conv``) and the classifier is dropped so ``model(x)`` returns pooled features of
size ``model.num_features``.

ViTs are created with ``dynamic_img_size=True``: the position embedding is interpolated on the fly when an
input has another size than ``img_size``. DINO needs this (96 px local crops go through the same ViT as the
224 px global crops), and so does evaluating a backbone at another resolution than it was trained at. The
state dict is unchanged by this flag, so exported weights still load into a plain timm ViT.
"""

from __future__ import annotations

import difflib
import pickle
from pathlib import Path

import timm
import torch
from safetensors import safe_open
from torch import nn

from ssl_radiology.errors import UserError

#: weight formats timm reads for ``pretrained_cfg_overlay=dict(file=...)`` (safetensors or a torch state dict)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _check_name(name: str) -> None:
    """Raise a UserError listing close matches when ``name`` is not a timm model (tags like ``.dino`` allowed)."""
    arch, tag = timm.models.split_model_name_tag(name)
    if not timm.is_model(arch):
        matches = timm.list_models(f"*{arch}*")[:12] or difflib.get_close_matches(
            arch, timm.list_models(), n=8
        )
        hint = f"; close matches: {', '.join(matches)}" if matches else ""
        raise UserError(f"unknown backbone '{name}' (not a timm model name){hint}")
    if tag and name not in timm.list_pretrained(f"{arch}.*"):
        tags = ", ".join(timm.list_pretrained(f"{arch}.*")) or "none"
        raise UserError(f"timm has no weights tagged '{tag}' for {arch}; available: {tags}")


def create_backbone(
    name: str,
    *,
    pretrained: bool = False,
    in_chans: int = 1,
    img_size: int | None = None,
    drop_path_rate: float = 0.0,
    checkpoint_file: str | Path | None = None,
) -> nn.Module:
    """A timm backbone with ``num_classes=0`` (pooled features, ``.num_features`` wide).

    ``pretrained=True`` downloads the ImageNet weights of ``name`` (``arch`` or ``arch.tag``) from the
    Hugging Face hub. ``checkpoint_file`` loads a local file in timm format instead, through the *same* timm
    code path (``pretrained_cfg_overlay=dict(file=...)``), so stem adaptation to ``in_chans``, classifier
    removal and ViT position-embedding resampling to ``img_size`` are exactly what the hub path does.
    ``img_size`` is passed only to models that take it (ViT-like); CNNs ignore it.
    """
    _check_name(name)
    if img_size is not None:
        validate_image_size(name, img_size)
    kwargs: dict = dict(in_chans=in_chans, num_classes=0, drop_path_rate=drop_path_rate)
    if checkpoint_file is not None:
        path = Path(checkpoint_file)
        if not path.is_file():
            raise UserError(f"{path}: weight file not found")
        # custom_load=False: some default tags (ViT augreg) point timm at a .npz loader we must bypass.
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path), custom_load=False)
        pretrained = True
    size_kwargs = [{"img_size": img_size, "dynamic_img_size": True}, {"img_size": img_size}, {}]
    if img_size is None:
        size_kwargs = [{"dynamic_img_size": True}, {}]
    model = None
    for extra in size_kwargs[:-1]:
        try:
            model = _create(name, pretrained, checkpoint_file, **kwargs, **extra)
            break
        except TypeError as exc:  # the model's constructor does not take img_size / dynamic_img_size
            if "img_size" not in str(exc):
                raise
    if model is None:
        model = _create(name, pretrained, checkpoint_file, **kwargs)
    if checkpoint_file is not None and str(checkpoint_file).endswith(".safetensors"):
        _check_covers(model, Path(checkpoint_file), name)
    return model


def _check_covers(model: nn.Module, path: Path, name: str) -> None:
    """timm loads file weights non-strictly once it drops the classifier: refuse files that miss keys.

    Applies to timm-format safetensors (the documented offline format), whose keys are the model's own.
    """
    with safe_open(str(path), framework="pt") as handle:
        present = set(handle.keys())
    missing = sorted(set(model.state_dict()) - present)
    if missing:
        raise UserError(f"{path}: not timm weights for {name}: missing keys {', '.join(missing[:5])}")


def _create(name: str, pretrained: bool, checkpoint_file: str | Path | None, **kwargs) -> nn.Module:
    """``timm.create_model`` with download and file errors turned into messages that say what to do."""
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, pickle.UnpicklingError, KeyError) as exc:
        if not pretrained:
            raise
        if checkpoint_file is not None:
            raise UserError(f"{checkpoint_file}: cannot load as timm weights for {name}: {exc}") from exc
        raise UserError(
            f"could not download ImageNet weights for {name} (offline?). Pass a local file: "
            f"--checkpoint imagenet:/path/to/model.safetensors (timm format) [{type(exc).__name__}]"
        ) from exc


def patch_size_of(model_or_name: nn.Module | str) -> int | None:
    """The ViT patch size of a model or timm name; ``None`` for models without a patch embedding (CNNs)."""
    model = model_or_name
    if isinstance(model_or_name, str):
        _check_name(model_or_name)
        with torch.device("meta"):  # no memory, no init cost: only the module structure is needed
            model = timm.create_model(model_or_name, pretrained=False, in_chans=1, num_classes=0)
    patch_size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch_size is None:
        return None
    return int(patch_size[0] if isinstance(patch_size, (tuple, list)) else patch_size)


def validate_image_size(model_or_name: nn.Module | str, image_size: int, setting: str = "image size") -> None:
    """Raise a UserError naming ``setting`` when ``image_size`` is not a multiple of the model's patch size."""
    if image_size <= 0:
        raise UserError(f"{setting} must be positive, got {image_size}")
    patch = patch_size_of(model_or_name)
    if patch and image_size % patch:
        name = model_or_name if isinstance(model_or_name, str) else type(model_or_name).__name__
        if not isinstance(model_or_name, str):
            name = getattr(model_or_name, "pretrained_cfg", {}).get("architecture", name)
        raise UserError(f"{setting} {image_size} is not divisible by the patch size {patch} of {name}")
