"""The ``raw-pixels`` baseline: the image itself as the representation, for kNN and linear evaluation.

A learned representation is only worth its pre-training if it beats the pixels it was computed from, so every
study evaluates this baseline next to its pre-trained conditions. Spec: ``raw-pixels[:SIZE[:PCA]]``:

- the evaluation input (resized to the evaluation image size, intensity-windowed and normalised exactly as
  any backbone sees it) is area-averaged to ``SIZE`` × ``SIZE`` pixels (default 32) and flattened;
- ``PCA`` (default 96; 0 = off) components are kept by a scikit-learn PCA fitted, per evaluation seed, on
  that seed's *training* rows only (never validation or test), then applied to every row.

It has no weights, so it cannot be fine-tuned: the supervised-from-scratch baseline is ``random`` fine-tuned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_radiology.errors import UserError

PREFIX = "raw-pixels"
DEFAULT_SIZE = 32
DEFAULT_PCA = 96


@dataclass(frozen=True)
class RawPixelsSpec:
    size: int = DEFAULT_SIZE
    pca: int = DEFAULT_PCA

    @property
    def hash(self) -> str:
        """The condition's identity in result files and feature-cache keys (there are no weights to hash)."""
        return f"{PREFIX}-{self.size}px-pca{self.pca}"


def is_raw_pixels(spec: str) -> bool:
    return spec == PREFIX or spec.startswith(PREFIX + ":")


def parse_spec(spec: str) -> RawPixelsSpec:
    """``raw-pixels`` | ``raw-pixels:SIZE`` | ``raw-pixels:SIZE:PCA`` (PCA 0 = no reduction)."""
    parts = spec.split(":")[1:]
    if len(parts) > 2:
        raise UserError(f"'{spec}': use raw-pixels[:SIZE[:PCA]], e.g. raw-pixels:32:96")
    try:
        values = [int(p) for p in parts]
    except ValueError as exc:
        raise UserError(f"'{spec}': SIZE and PCA of raw-pixels[:SIZE[:PCA]] must be integers") from exc
    parsed = RawPixelsSpec(*values)
    if parsed.size < 1 or parsed.pca < 0:
        raise UserError(f"'{spec}': SIZE must be >= 1 and PCA >= 0")
    return parsed


class RawPixels(nn.Module):
    """A weightless "backbone": area-resize the (normalised) input to size × size and flatten it."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        super().__init__()
        self.size = size
        self.num_features = size * size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, self.size).flatten(1)


def reduce_features(spec: str, features: np.ndarray, train_rows: np.ndarray, seed: int) -> np.ndarray:
    """PCA-reduce raw-pixel features with a PCA fitted on ``train_rows`` only; other specs pass through."""
    if not is_raw_pixels(spec):
        return features
    n_components = min(parse_spec(spec).pca, len(train_rows), features.shape[1])
    if n_components < 1:
        return features
    from sklearn.decomposition import PCA

    pca = PCA(n_components=n_components, random_state=seed).fit(features[train_rows])
    return pca.transform(features).astype(np.float32)
