"""Layer-by-layer CKA between two backbones, streamed over a DataLoader.

Forward hooks capture the output of each chosen layer, pool it to one vector per image and feed it to
:class:`~ssl_radiology.analysis.cka.MultiLayerMinibatchCKA`; only one batch of pooled activations is held
at a time, so the dataset size is unbounded.

Pooling (decided here, once, so heatmaps are comparable):

* tokens ``(B, T, C)`` (ViT blocks) → mean over all tokens, class/register tokens included. Flattening
  (``T·C`` ≈ 75 000 values per image for ViT-S/16 at 224 px) would multiply cost and memory by T, and the
  token mean is the representation that pooled downstream heads use;
* maps ``(B, C, H, W)`` (CNN stages) → global average pooling over H and W;
* vectors ``(B, C)`` are used as they are.

A module that runs several times in one forward pass contributes its last output.

Default layers per architecture, by module name (regular expressions matched against the whole name of
``model.named_modules()``): timm ViT/DeiT/EVA ``blocks.N``, ResNet ``layerN``, ConvNeXt/RegNet-style
``stages.N``. Pass ``layers_x``/``layers_y`` patterns for anything else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ssl_radiology.analysis.cka import MultiLayerMinibatchCKA

DEFAULT_LAYER_PATTERNS = (r"blocks\.\d+", r"layer\d+", r"stages\.\d+")


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


def pool_activation(output: torch.Tensor | tuple | list) -> torch.Tensor:
    """One (B, C) vector per example from a layer output (see the module docstring for the rule)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"cannot pool a layer output of type {type(output).__name__}")
    if output.ndim == 2:
        return output
    if output.ndim == 3:
        return output.mean(dim=1)
    if output.ndim == 4:
        return output.mean(dim=(2, 3))
    raise ValueError(f"cannot pool a layer output of shape {tuple(output.shape)}")


def _images(batch: torch.Tensor | dict | tuple | list) -> torch.Tensor:
    """The image tensor of a batch: a tensor, a dict with "image", or (image, ...) tuples."""
    if isinstance(batch, dict):
        if "image" not in batch:
            raise KeyError(f"batch dict has no 'image' key (keys: {sorted(batch)})")
        batch = batch["image"]
    elif isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"batch images must be a tensor, got {type(batch).__name__}")
    return batch


class _Recorder:
    """Forward hooks that keep the latest pooled output of each named module."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        modules = dict(model.named_modules())
        self.names = list(names)
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [modules[name].register_forward_hook(self._hook(name)) for name in self.names]

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            self.outputs[name] = pool_activation(output).float()

        return hook

    def take(self) -> list[torch.Tensor]:
        missing = [name for name in self.names if name not in self.outputs]
        if missing:
            raise RuntimeError(f"layers {missing} produced no output in the forward pass")
        taken = [self.outputs[name] for name in self.names]
        self.outputs.clear()
        return taken

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.inference_mode()
def layer_cka(
    model_x: nn.Module,
    model_y: nn.Module,
    loader: Iterable,
    layers_x: Sequence[str] | None = None,
    layers_y: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Unbiased minibatch CKA between every chosen layer of ``model_x`` and of ``model_y``.

    ``loader`` yields model-ready input (normalised, e.g. through ``transforms.EvalTransform``) as tensors,
    dicts with ``"image"`` or ``(image, ...)`` tuples. Both models see the same images (each batch is moved
    to ``device``) in eval mode; their training
    flags are restored afterwards. Batches smaller than 4 images are skipped (the unbiased estimator
    needs n ≥ 4), so use ``drop_last=True`` or a batch size that leaves no such tail.
    Returns ``(matrix, names_x, names_y)`` with ``matrix[i, j]`` = CKA(layer i of X, layer j of Y).
    """
    names_x, names_y = select_layers(model_x, layers_x), select_layers(model_y, layers_y)
    accumulator = MultiLayerMinibatchCKA(len(names_x), len(names_y))
    was_training = (model_x.training, model_y.training)
    recorders = [_Recorder(model_x, names_x), _Recorder(model_y, names_y)]
    try:
        model_x.eval()
        model_y.eval()
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            images = _images(batch).to(device)
            if images.shape[0] < 4:
                continue
            model_x(images)
            model_y(images)
            accumulator.update(recorders[0].take(), recorders[1].take())
    finally:
        for recorder in recorders:
            recorder.remove()
        model_x.train(was_training[0])
        model_y.train(was_training[1])
    return accumulator.compute(), names_x, names_y
