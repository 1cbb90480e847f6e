"""Layer-by-layer CKA between two backbones, streamed over a DataLoader.

:class:`~ssl_radiology.features.layers.LayerRecorder` hooks capture each chosen layer's output pooled to
one vector per image (``mean`` / ``cls`` / ``flat``, see :mod:`ssl_radiology.features.layers` for the rules
and the default layers per architecture) and feed it to
:class:`~ssl_radiology.analysis.cka.MultiLayerMinibatchCKA`; only one batch of pooled activations is held at
a time, so the dataset size is unbounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ssl_radiology.analysis.cka import MultiLayerMinibatchCKA
from ssl_radiology.features.layers import DEFAULT_POOLING, LayerRecorder, select_layers


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


@torch.inference_mode()
def layer_cka(
    model_x: nn.Module,
    model_y: nn.Module,
    loader: Iterable,
    layers_x: Sequence[str] | None = None,
    layers_y: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    pooling: str = DEFAULT_POOLING,
) -> tuple[np.ndarray, list[str], list[str]]:
    """Unbiased minibatch CKA between every chosen layer of ``model_x`` and of ``model_y``.

    ``loader`` yields model-ready input (normalised, e.g. through ``transforms.EvalTransform``) as tensors,
    dicts with ``"image"`` or ``(image, ...)`` tuples. Both models see the same images (each batch is moved
    to ``device``) in eval mode; their training flags are restored afterwards. Batches smaller than 4 images
    are skipped (the unbiased estimator needs n ≥ 4), so use ``drop_last=True`` or a batch size that leaves
    no such tail. Returns ``(matrix, names_x, names_y)`` with ``matrix[i, j]`` = CKA(layer i of X, layer j
    of Y).
    """
    names_x, names_y = select_layers(model_x, layers_x), select_layers(model_y, layers_y)
    accumulator = MultiLayerMinibatchCKA(len(names_x), len(names_y))
    was_training = (model_x.training, model_y.training)
    recorders = [LayerRecorder(model_x, names_x, pooling), LayerRecorder(model_y, names_y, pooling)]
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
