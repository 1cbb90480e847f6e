"""Continued pre-training: start a run from existing weights (``ssl-rad pretrain --init SPEC``).

``SPEC`` is any backbone spec the evaluation commands accept (``ssl_radiology.models.load_backbone``):
``imagenet:<timm tag>`` / ``imagenet:<file>``, a ``.safetensors`` backbone, a ``.ckpt`` or one of our run
directories. What is loaded:

* **Our own run of the same method** (run directory, its ``.ckpt``, or an exported ``method.safetensors``):
  the *whole method* — student, teacher, heads, loss centres — so a run continues where the other stopped
  (DINOv2 issue #339: re-initialised heads wreck pre-trained features). Position embeddings are resampled
  when the image size changed.
* **Anything else**: the backbone weights, copied into every backbone of the method (DINO / DINOv2: student
  *and* teacher; SimCLR / supervised: the encoder; MAE: the encoder ViT); heads start fresh.

**RGB → 1 channel** (``train.init_channels``): our models take one channel. ImageNet weights are adapted by
timm when it builds the model with ``in_chans=1``: the stem's RGB filters are *summed* (``sum``, the default),
which is exactly what the RGB network computes on a grayscale image repeated into 3 channels — so ``sum`` is
also the "repeat" rule. ``mean`` divides the summed filters by 3, keeping the first layer's activation scale
of a single colour channel (useful when inputs are normalised per channel).

**Head warm-up** (``train.head_warmup_steps`` N): for the first N optimizer steps the backbone gets no
update (its gradients are dropped before the optimizer step), so freshly initialised heads first learn to
read the pre-trained features instead of pushing large random gradients into them. EMA teachers follow the
unchanged student and stay unchanged too; DINOv2's mask token (not part of a timm backbone) trains with the
heads.

**Provenance**: ``init_record`` (``{"spec", "hash", "weights", "channels", "full"}``; ``hash`` is
``models.checkpoint_hash(spec)``, the id evaluation results use for that spec, ``weights`` the content hash
of the backbone tensors that entered the run) is kept on the module and written into the checkpoint
(``checkpoint["ssl_radiology"]["init"]``) and ``backbone.json`` (``"init"``), from where evaluation copies
``hash`` into every result row (``models.provenance.read_init_hash`` → column ``init_hash``).
``train.export_heads`` also writes ``method.safetensors`` + ``method.json`` (the whole method) at the end,
a pickle-free file another run can ``--init`` from.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from ssl_radiology.errors import UserError

METHOD_FILE = "method.safetensors"
METHOD_META = "method.json"
CHANNEL_RULES = ("sum", "mean")
WEIGHT_FILES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
#: ``method.json`` marker: the file beside it is a whole method state, not a backbone export
METHOD_FORMAT = "ssl-radiology-method-state"


def backbone_targets(module: nn.Module) -> list[nn.Module]:
    """Every network of ``module`` that is a copy of the backbone: the exported one and, for methods with an
    EMA teacher, the student (MAE / SimCLR / supervised export the trained encoder itself)."""
    exported = module.export_module()  # type: ignore[operator]
    student = getattr(module, "student_backbone", None)
    return [exported] if student is None or student is exported else [student, exported]


def trainable_backbone(module: nn.Module) -> nn.Module:
    """The backbone the optimizer updates (student when there is a teacher)."""
    return getattr(module, "student_backbone", None) or module.export_module()  # type: ignore[operator]


# ---------------------------------------------------------------------------------------------- loading
def _method_state(spec: str, method: str) -> tuple[Path, dict[str, torch.Tensor]] | None:
    """``(file, state_dict)`` of a whole saved method of the same name, or None (backbone-only init).

    Looked for in a run directory (``method.safetensors``, else ``checkpoints/last.ckpt``), a ``.ckpt``, or a
    ``.safetensors`` whose ``.json`` beside it marks a method state (backbone exports are not)."""
    path = Path(spec)
    candidates: list[Path] = []
    if path.is_dir():
        candidates = [path / METHOD_FILE, path / "checkpoints" / "last.ckpt"]
    elif path.suffix in (".ckpt", ".safetensors"):
        candidates = [path]
    for file in candidates:
        if not file.is_file():
            continue
        if file.suffix == ".ckpt":
            checkpoint = _load_ckpt(file)
            if (checkpoint.get("ssl_radiology") or {}).get("method") == method:
                return file, dict(checkpoint["state_dict"])
            continue
        meta_path = file.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if meta.get("format") == METHOD_FORMAT and meta.get("method") == method:
            from safetensors.torch import load_file

            return file, load_file(str(file))
    return None


def _load_ckpt(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint, tensors and plain values only (memory-mapped: only what is used is read)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # unpickling refusals, truncated files: one clear line
        raise UserError(
            f"--init {path}: not a readable checkpoint of tensors ({type(exc).__name__})"
        ) from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"--init {path}: expected a Lightning checkpoint with a state_dict")
    return checkpoint


def _fit_pos_embeds(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resample ViT position embeddings in ``state`` to the grid of ``module``'s ViTs (other image size)."""
    from timm.layers import resample_abs_pos_embed

    own = module.state_dict()
    for key, value in list(state.items()):
        if not key.endswith("pos_embed") or key not in own or own[key].shape == value.shape:
            continue
        vit = module.get_submodule(key.rsplit(".", 1)[0]) if "." in key else module
        prefix = 0 if getattr(vit, "no_embed_class", False) else int(getattr(vit, "num_prefix_tokens", 1))
        old = math.isqrt(value.shape[1] - prefix)
        state[key] = resample_abs_pos_embed(
            value, new_size=list(vit.patch_embed.grid_size), old_size=[old, old], num_prefix_tokens=prefix
        )


def _load_into(target: nn.Module, state: dict[str, torch.Tensor], what: str, hint: str = "") -> None:
    expected, given = set(target.state_dict()), set(state)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:4])}" if missing else "",
                f"unexpected {', '.join(unexpected[:4])}" if unexpected else "",
            )
            if part
        )
        raise UserError(f"--init: {what} does not match this run's model ({detail}){hint}")
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise UserError(f"--init: {what} does not fit this run's model ({first}){hint}") from exc


def _adapt_channels(backbone: nn.Module, spec: str, rule: str) -> None:
    """``mean``: divide the RGB-summed stem of ImageNet weights by 3 (``sum`` is timm's own adaptation)."""
    if rule == "mean" and spec.startswith("imagenet"):
        stem = backbone.get_submodule(str(backbone.pretrained_cfg.get("first_conv", "conv1")))
        with torch.no_grad():
            stem.weight.div_(3.0)


def apply_init(module: nn.Module, spec: str, *, channels: str = "sum") -> dict[str, Any]:
    """Load ``spec`` into ``module`` (see module docstring); returns and stores ``module.init_record``."""
    from ssl_radiology.models import checkpoint_hash, load_backbone, weights_hash

    check_init({"init": spec, "init_channels": channels})
    settings = module.settings  # type: ignore[attr-defined]
    name, size = str(settings["backbone"]), int(settings["image_size"])
    full = _method_state(spec, str(settings["name"]))
    if full is not None:
        file, state = full
        _fit_pos_embeds(module, state)
        hint = "; to take only its backbone (fresh heads), pass --init RUN_DIR/backbone.safetensors"
        _load_into(module, state, f"{file} ({settings['name']} method state)", hint)
    else:
        backbone = load_backbone(spec, backbone=name, image_size=size)
        _adapt_channels(backbone, spec, channels)
        state = dict(backbone.state_dict())
        for target in backbone_targets(module):
            _fit_pos_embeds(target, state)
            _load_into(target, dict(state), f"{spec} ({name} backbone)")
    record = {
        "spec": spec,
        "hash": checkpoint_hash(spec, backbone=name),
        "weights": weights_hash(module.export_module()),  # type: ignore[operator]
        "channels": channels,
        "full": full is not None,
    }
    module.init_record = record  # type: ignore[assignment]
    return record


# ---------------------------------------------------------------------------------------------- callbacks
class HeadWarmup(L.Callback):
    """Drop the backbone's gradients for the first ``steps`` optimizer steps (heads-only training)."""

    def __init__(self, steps: int) -> None:
        self.steps = int(steps)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if trainer.global_step < self.steps:
            for param in trainable_backbone(pl_module).parameters():
                param.grad = None


class ExportMethod(L.Callback):
    """At the end of a fit, rank 0 writes ``method.safetensors`` (the whole method state) + ``method.json``."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.interrupted:
            return
        from safetensors.torch import save_file

        # clone: safetensors refuses tensors that share storage (tied / parametrised weights)
        state = {
            key: value.detach().to("cpu").contiguous().clone()
            for key, value in pl_module.state_dict().items()
        }
        settings = pl_module.settings  # type: ignore[attr-defined]
        meta = {
            "format": METHOD_FORMAT,
            "method": str(settings["name"]),
            "backbone": str(settings["backbone"]),
            "image_size": int(settings["image_size"]),
            "global_step": int(trainer.global_step),
            "init": getattr(pl_module, "init_record", None),
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / (METHOD_FILE + ".tmp")
        save_file(state, str(tmp), metadata={"format": "pt"})
        os.replace(tmp, self.run_dir / METHOD_FILE)
        (self.run_dir / METHOD_META).write_text(json.dumps(meta, indent=2) + "\n")


def check_init(train: dict[str, Any]) -> None:
    """The ``train.init*`` settings, checked before any data or model work."""
    if train.get("init_channels", "sum") not in CHANNEL_RULES:
        raise UserError(f"train.init_channels: unknown rule '{train['init_channels']}' (sum or mean)")
    warmup = train.get("head_warmup_steps") or 0
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UserError(f"train.head_warmup_steps must be an integer ≥ 0, got {warmup}")
    spec = train.get("init")
    if spec is None:
        return
    spec = str(spec)
    if spec in ("random", "raw-pixels") or spec.startswith("raw-pixels"):
        raise UserError(f"--init {spec}: give pre-trained weights (random initialisation is the default)")
    rest = spec.partition(":")[2] if spec.startswith("imagenet") else spec
    looks_like_file = not spec.startswith("imagenet") or "/" in rest or rest.endswith(WEIGHT_FILES)
    if rest and looks_like_file and not Path(rest).exists():
        raise UserError(f"--init {spec}: no such file or run directory")


def init_callbacks(train: dict[str, Any], run_dir: Path) -> list[L.Callback]:
    """The callbacks the ``train.head_warmup_steps`` / ``train.export_heads`` settings ask for."""
    callbacks: list[L.Callback] = []
    warmup = int(train.get("head_warmup_steps") or 0)
    if warmup:
        callbacks.append(HeadWarmup(warmup))
    if train.get("export_heads"):
        callbacks.append(ExportMethod(run_dir))
    return callbacks
