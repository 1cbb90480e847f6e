"""Load, export and fingerprint backbone weights without ever running code from a file.

A backbone *spec* names where weights come from:

- a pre-training run directory (``backbone.safetensors`` + ``backbone.json``; falls back to
  ``checkpoints/last.ckpt`` when a run stopped before exporting),
- ``<file>.safetensors`` (metadata from ``<stem>.json`` or ``backbone.json`` beside it, else ``backbone=``),
- ``<file>.ckpt`` (Lightning; ``checkpoint["ssl_radiology"]`` says which keys are the backbone),
- ``random`` (initialised from torch's global RNG: seed with ``torch.manual_seed`` first),
- ``raw-pixels[:SIZE[:PCA]]`` (no weights: the resized image as features; see ``raw_pixels``),
- ``imagenet`` (timm's default ImageNet tag of ``backbone=``), ``imagenet:<tag>`` (``imagenet:dino`` or
  ``imagenet:vit_small_patch16_224.dino``) or ``imagenet:<file>`` (timm-format weights on disk; offline use).

Lightning checkpoints are read with ``torch.load(weights_only=True)``, safetensors hold only tensors, and
timm reads ``.pth`` files with ``weights_only=True`` too: a file carrying a pickled object is refused.

Exported ``backbone.safetensors`` has exactly the keys of ``timm.create_model(name, in_chans=1,
num_classes=0)``, so plain timm loads it: ``timm.create_model(name, pretrained=True, in_chans=1,
num_classes=0, pretrained_cfg_overlay=dict(file=path, custom_load=False))`` (``custom_load=False`` because
some default ViT tags would otherwise route the file to timm's ``.npz`` reader).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ssl_radiology.errors import UserError
from ssl_radiology.models.backbones import WEIGHT_SUFFIXES, create_backbone, validate_image_size
from ssl_radiology.models.raw_pixels import RawPixels, is_raw_pixels, parse_spec

WEIGHTS_FILE = "backbone.safetensors"
META_FILE = "backbone.json"
LAST_CKPT = Path("checkpoints") / "last.ckpt"
#: hex characters kept from the SHA-256 of the weights (64 bits: collisions are not a practical concern)
HASH_CHARS = 16


def load_backbone(
    spec: str | os.PathLike[str], *, backbone: str | None = None, image_size: int | None = None
) -> nn.Module:
    """A 1-channel, ``num_classes=0`` timm backbone with the weights named by ``spec`` (see module docstring).

    ``image_size`` is the input size the caller will use. For ``random`` / ``imagenet`` specs it is the size
    the model is built at (timm resamples ImageNet ViT position embeddings to it). Saved backbones are built
    at their training size so the weights load strictly; ViTs are ``dynamic_img_size`` and interpolate
    position embeddings for other inputs, so ``image_size`` is only checked against the patch size.
    """
    text = os.fspath(spec)
    if is_raw_pixels(text):
        return RawPixels(parse_spec(text).size)
    if text == "random":
        return create_backbone(_require_backbone(backbone, text), img_size=image_size)
    if text == "imagenet" or text.startswith("imagenet:"):
        return _load_imagenet(text.partition(":")[2], backbone, image_size)
    name, saved_size, state = _read_weights(Path(text), backbone)
    if image_size is not None:
        validate_image_size(name, image_size)
    model = create_backbone(name, img_size=saved_size)
    _load_strict(model, state, Path(text), name)
    return model


def _require_backbone(backbone: str | None, spec: str) -> str:
    if not backbone:
        raise UserError(f"checkpoint '{spec}' needs a backbone name (e.g. --backbone vit_small_patch16_224)")
    return backbone


def _load_imagenet(rest: str, backbone: str | None, image_size: int | None) -> nn.Module:
    """``imagenet`` / ``imagenet:<tag or timm name>`` via the hub, ``imagenet:<file>`` via the same timm path."""
    if not rest:
        return create_backbone(_require_backbone(backbone, "imagenet"), pretrained=True, img_size=image_size)
    if rest.endswith(WEIGHT_SUFFIXES) or Path(rest).is_file():
        name = _require_backbone(backbone, f"imagenet:{rest}")
        return create_backbone(name, checkpoint_file=rest, img_size=image_size)
    return create_backbone(_imagenet_name(rest, backbone), pretrained=True, img_size=image_size)


def _imagenet_name(rest: str, backbone: str | None) -> str:
    """Full timm ``arch.tag`` for ``imagenet:<rest>``: either a timm name itself or a tag of ``backbone``."""
    arch = timm.models.split_model_name_tag(rest)[0]
    if timm.is_model(arch):
        if backbone and timm.models.split_model_name_tag(backbone)[0] != arch:
            raise UserError(f"imagenet:{rest} is a {arch} but the backbone setting is {backbone}")
        return rest
    base = timm.models.split_model_name_tag(_require_backbone(backbone, f"imagenet:{rest}"))[0]
    return f"{base}.{rest}"


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read backbone metadata ({exc})") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("backbone"), str):
        raise UserError(f"{path}: expected a JSON object with a 'backbone' timm name")
    return meta


def _meta_beside(weights: Path) -> Path | None:
    for candidate in (weights.with_suffix(".json"), weights.parent / META_FILE):
        if candidate.is_file():
            return candidate
    return None


def _resolve_file(path: Path) -> Path:
    """The weights file a path spec points at (run directories resolve to their export or last.ckpt)."""
    if path.is_dir():
        for candidate in (path / WEIGHTS_FILE, path / LAST_CKPT):
            if candidate.is_file():
                return candidate
        raise UserError(f"{path}: no {WEIGHTS_FILE} or {LAST_CKPT} in this run directory")
    if not path.exists():
        raise UserError(
            f"{path}: no such checkpoint (expected a run directory, .safetensors, .ckpt, "
            "'random' or 'imagenet[:tag|:file]')"
        )
    if path.suffix not in {".safetensors", ".ckpt"}:
        raise UserError(f"{path}: unsupported checkpoint type '{path.suffix}' (use .safetensors or .ckpt)")
    return path


def _read_weights(path: Path, backbone: str | None) -> tuple[str, int | None, dict[str, torch.Tensor]]:
    """(timm name, training image size, backbone state dict) of a run dir / .safetensors / .ckpt."""
    file = _resolve_file(path)
    if file.suffix == ".ckpt":
        name, size, prefix, state = _ckpt_backbone(file)
        state = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    else:
        meta_path = _meta_beside(file)
        meta = _read_meta(meta_path) if meta_path else {}
        name = meta.get("backbone") or _require_backbone(backbone, str(file))
        size = meta.get("image_size")
        state = dict(_iter_safetensors(file))
    if (
        backbone
        and timm.models.split_model_name_tag(backbone)[0] != timm.models.split_model_name_tag(name)[0]
    ):
        raise UserError(f"{file}: holds a {name} backbone, but the backbone setting is {backbone}")
    return name, size, state


def _torch_load(path: Path) -> dict:
    """``torch.load`` restricted to tensors and plain values; memory-mapped when the file format allows."""
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path}: refused to load: the file contains pickled objects or code, not only tensors and plain "
            f"values ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({exc})") from exc
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path}: expected a checkpoint dictionary, found {type(checkpoint).__name__}")
    return checkpoint


def _ckpt_backbone(path: Path) -> tuple[str, int | None, str, dict[str, torch.Tensor]]:
    """(name, image size, key prefix, full state dict) of a Lightning checkpoint written by ssl-rad pretrain."""
    checkpoint = _torch_load(path)
    info = checkpoint.get("ssl_radiology")
    state = checkpoint.get("state_dict")
    if not isinstance(info, dict) or not isinstance(info.get("backbone"), str) or not isinstance(state, dict):
        raise UserError(
            f"{path}: not an ssl-radiology pre-training checkpoint (no 'ssl_radiology' entry "
            "naming the backbone, or no 'state_dict')"
        )
    prefix = str(info.get("backbone_prefix", ""))
    if not any(key.startswith(prefix) for key in state):
        raise UserError(f"{path}: no state_dict keys start with the backbone prefix '{prefix}'")
    return info["backbone"], info.get("image_size"), prefix, state


def _iter_safetensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) pairs in sorted key order, one tensor in memory at a time (the file is memory-mapped)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in sorted(handle.keys()):
                yield key, handle.get_tensor(key)
    except (SafetensorError, OSError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from exc


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, name: str) -> None:
    expected = set(model.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        parts = [
            f"missing keys {', '.join(missing[:5])}" if missing else "",
            f"unexpected keys {', '.join(unexpected[:5])}" if unexpected else "",
        ]
        detail = "; ".join(part for part in parts if part)
        raise UserError(f"{path}: weights do not match {name}: {detail}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise UserError(f"{path}: weights do not fit {name}: {exc}") from exc


def export_backbone(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    backbone_name: str,
    image_size: int,
    method: str | None = None,
) -> Path:
    """Write ``backbone.safetensors`` + ``backbone.json`` atomically; returns the weights path.

    ``path`` is a directory (files go inside it) or a ``.safetensors`` file (metadata as ``<stem>.json``
    beside it). The keys must be those of ``timm.create_model(backbone_name, in_chans=1, num_classes=0)``.
    """
    target = Path(path)
    weights = target if target.suffix == ".safetensors" else target / WEIGHTS_FILE
    with torch.device("meta"):
        reference = set(timm.create_model(backbone_name, in_chans=1, num_classes=0).state_dict())
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    if set(state) != reference:
        odd = sorted(set(state) ^ reference)[:5]
        raise ValueError(f"model keys differ from timm {backbone_name} (in_chans=1, num_classes=0): {odd}")
    meta = {
        "backbone": backbone_name,
        "image_size": int(image_size),
        "in_chans": 1,
        "method": method,
        "num_features": int(model.num_features),
    }
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, weights)
    meta_path = weights.with_suffix(".json")
    tmp_meta = meta_path.with_name(meta_path.name + ".tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_meta, meta_path)
    return weights


def _hash_tensors(items: Iterator[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over (key, dtype, shape, raw bytes) in the order given (callers sort by key)."""
    digest = hashlib.sha256()
    for key, tensor in items:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{key}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()[:HASH_CHARS]


def weights_hash(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """Content hash of in-memory weights; equals :func:`checkpoint_hash` of a file holding the same tensors."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return _hash_tensors((key, state[key]) for key in sorted(state))


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:HASH_CHARS]


def checkpoint_hash(
    spec: str | os.PathLike[str], *, backbone: str | None = None, seed: int | None = None
) -> str:
    """One identifier per backbone spec, for result files and feature-cache keys.

    - run dir / ``.safetensors`` / ``.ckpt``: hash of the backbone tensors (key, dtype, shape, bytes in
      sorted key order), so a ``.ckpt`` and the ``backbone.safetensors`` exported from it agree, and both
      equal :func:`weights_hash` of the loaded model. Streams one tensor at a time.
    - ``random``: ``random-<backbone>-seed<seed>``; ``seed`` defaults to ``torch.initial_seed()``, i.e. the
      value last given to ``torch.manual_seed`` — the same seed that initialises the weights.
    - ``imagenet[:tag]``: ``imagenet-<arch.tag>`` (the resolved timm name; hub weights are immutable per tag).
    - ``imagenet:<file>``: ``imagenet-<sha256 of the file>``.
    """
    text = os.fspath(spec)
    if is_raw_pixels(text):
        return parse_spec(text).hash
    if text == "random":
        name = _require_backbone(backbone, text)
        return f"random-{name}-seed{torch.initial_seed() if seed is None else seed}"
    if text == "imagenet" or text.startswith("imagenet:"):
        rest = text.partition(":")[2]
        if rest and (rest.endswith(WEIGHT_SUFFIXES) or Path(rest).is_file()):
            if not Path(rest).is_file():
                raise UserError(f"{rest}: weight file not found")
            return f"imagenet-{_file_sha(Path(rest))}"
        name = _imagenet_name(rest, backbone) if rest else _require_backbone(backbone, text)
        arch, tag = timm.models.split_model_name_tag(name)
        return f"imagenet-{arch}.{tag or timm.models.get_pretrained_cfg(arch).tag}"
    file = _resolve_file(Path(text))
    if file.suffix == ".safetensors":
        return _hash_tensors(_iter_safetensors(file))
    _, _, prefix, state = _ckpt_backbone(file)
    keys = sorted(key for key in state if key.startswith(prefix))
    return _hash_tensors((key[len(prefix) :], state[key]) for key in keys)
