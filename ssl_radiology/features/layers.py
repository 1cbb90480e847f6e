"""Intermediate-layer activations of a backbone, one pooled vector per image and layer.

Forward hooks capture the output of each chosen layer; :func:`pool_activation` turns it into one vector
per image. The rule is decided here, once, so that the layer-wise CKA heatmap and the per-layer kNN of
``ssl-rad analyze`` describe the same vectors. Poolings (``POOLINGS``):

* ``auto`` (the default) — ``cls`` for a ViT with a class token, ``mean`` otherwise (CNN stages, ViTs
  without a class token). Chosen because it is the one that shows structure. Measured on the demo's
  ``test_vit3`` (9 blocks, 16 patches at 64 px) over 192 phantom CT slices: a 40-step DINO run against
  itself gives CKA 1.000 between *every* pair of blocks with ``mean`` and ``flat`` pooling, but 0.79–0.99
  (off-diagonal mean 0.92) with ``cls``; against a random init 1.000 everywhere vs 0.77–0.92; two random
  inits 0.967 / 0.980 everywhere vs 0.83–0.90. The 3-block ViT of the tests: ≥ 0.999 vs 0.80–0.86.
* ``mean`` — ViT tokens ``(B, T, C)``: mean over the patch tokens (class / register tokens excluded);
  CNN maps ``(B, C, H, W)``: global average over H and W. Cheap, but in a ViT every block adds a small
  update to the residual stream, so mean-pooled tokens of all blocks look alike (CKA ≈ 0.9–1 everywhere on
  a small ViT) and a heatmap shows little structure.
* ``cls`` — the class token ``x[:, 0]`` (ViTs with a class token only). What a ViT's own head reads;
  it is computed from attention over the patches, so it changes from block to block.
* ``flat`` — every patch token (or every spatial position) concatenated: ``T·C`` values per image.
  Keeps *where* things are (it separates a CNN's stages, whose maps differ in resolution), but on the
  small ViTs measured above it is as uniform as ``mean``: the residual stream dominates every token too.
  Memory and time grow by T (ViT-S/16 at 224 px: 75 000 values per image), which the minibatch CKA (Gram
  matrices of one batch) handles, but keep the sample small on a CPU.

Vectors ``(B, C)`` are used as they are with any pooling. A module that runs several times in one forward
pass contributes its last output.

Default layers per architecture, by module name (regular expressions matched against the whole name of
``model.named_modules()``): timm ViT/DeiT/EVA ``blocks.N``, ResNet ``layerN``, ConvNeXt/RegNet-style
``stages.N``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_LAYER_PATTERNS = (r"blocks\.\d+", r"layer\d+", r"stages\.\d+")
POOLINGS = ("auto", "mean", "cls", "flat")
#: what ``ssl-rad analyze`` uses unless told otherwise (measured choice, see the module docstring)
DEFAULT_POOLING = "auto"


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown layer pooling '{pooling}' (choose from {', '.join(POOLINGS)})")
    return pooling


def prefix_tokens(model: nn.Module) -> int:
    """Class + register tokens in front of the patch tokens of a timm ViT (0 for other models)."""
    return int(getattr(model, "num_prefix_tokens", 0) or 0)


def select_layers(model: nn.Module, patterns: Sequence[str] | None = None) -> list[str]:
    """Names of the modules to compare, in forward (registration) order.

    ``patterns=None`` tries the defaults in :data:`DEFAULT_LAYER_PATTERNS` and uses the first that
    matches anything.
    """
    names = [name for name, _ in model.named_modules() if name]
    candidates = [[p] for p in DEFAULT_LAYER_PATTERNS] if patterns is None else [list(patterns)]
    for group in candidates:
        compiled = [re.compile(p) for p in group]
        chosen = [name for name in names if any(c.fullmatch(name) for c in compiled)]
        if chosen:
            return chosen
    top_level = sorted({name.split(".")[0] for name in names})
    wanted = DEFAULT_LAYER_PATTERNS if patterns is None else patterns
    raise ValueError(
        f"no module of {type(model).__name__} matches {list(wanted)}; top-level modules: {top_level}"
    )


def pool_activation(output: Any, pooling: str = DEFAULT_POOLING, prefix: int = 0) -> torch.Tensor:
    """One (B, ·) vector per example from a layer output (rules in the module docstring).

    ``prefix`` is the number of class / register tokens in front of the patch tokens (:func:`prefix_tokens`).
    """
    import torch

    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"cannot pool a layer output of type {type(output).__name__}")
    check_pooling(pooling)
    if output.ndim == 2:
        return output
    if output.ndim not in (3, 4):
        raise ValueError(f"cannot pool a layer output of shape {tuple(output.shape)}")
    if pooling == "auto":
        pooling = "cls" if output.ndim == 3 and prefix >= 1 else "mean"
    if pooling == "cls":
        if output.ndim != 3 or prefix < 1:
            raise ValueError(
                f"cls pooling needs ViT tokens with a class token; got an output of shape "
                f"{tuple(output.shape)} from a model with {prefix} prefix tokens (use mean or flat)"
            )
        return output[:, 0]
    spatial = output[:, prefix:] if output.ndim == 3 else output
    if pooling == "flat":
        return spatial.flatten(1)
    return spatial.mean(dim=1) if output.ndim == 3 else spatial.mean(dim=(2, 3))


class LayerRecorder:
    """Forward hooks that keep the latest pooled output of each named module; :meth:`remove` when done."""

    def __init__(self, model: nn.Module, names: Sequence[str], pooling: str = DEFAULT_POOLING) -> None:
        modules = dict(model.named_modules())
        self.names = list(names)
        self.pooling, self.prefix = check_pooling(pooling), prefix_tokens(model)
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.names]

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: Any) -> None:
            self.outputs[name] = pool_activation(output, self.pooling, self.prefix).float()

        return hook

    def take(self) -> list[torch.Tensor]:
        """The pooled outputs of the last forward pass, in layer order (and forget them)."""
        missing = [name for name in self.names if name not in self.outputs]
        if missing:
            raise RuntimeError(f"layers {missing} produced no output in the forward pass")
        taken = [self.outputs[name] for name in self.names]
        self.outputs.clear()
        return taken

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def layer_features(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    patterns: Sequence[str] | None = None,
    pooling: str = DEFAULT_POOLING,
) -> dict[str, np.ndarray]:
    """``{layer name: (N, ·) pooled activations}`` of the default (or given) layers, plus ``"output"``.

    ``batches`` yields model-ready input (e.g. :func:`ssl_radiology.features.extract.model_batches`); the
    model runs in eval mode and its training flag is restored afterwards.
    """
    import torch

    names = select_layers(model, patterns)
    recorder = LayerRecorder(model, names, pooling)
    collected: dict[str, list[np.ndarray]] = {name: [] for name in [*names, "output"]}
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            for images in batches:
                collected["output"].append(model(images).float().cpu().numpy())
                for name, pooled in zip(names, recorder.take(), strict=True):
                    collected[name].append(pooled.cpu().numpy())
    finally:
        recorder.remove()
        model.train(was_training)
    return {name: np.concatenate(chunks) for name, chunks in collected.items()}
