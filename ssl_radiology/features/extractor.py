"""A backbone reference + extraction options → its model and its (cached) features.

This is the one place where evaluation (``ssl-rad knn`` / ``linear-eval``), analysis (``ssl-rad analyze``)
and ``ssl-rad embed`` turn a :class:`~ssl_radiology.api.types.BackboneRef` into features, so they share one
cache key and never disagree about the numbers. Random weights are a family, not one set of weights: the
condition hash (result identity) is ``random-<arch>``, while each seed draws its own weights (drawn inside
a forked RNG, so the caller's global RNG state is untouched) and has its own cache entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ssl_radiology.errors import UserError
from ssl_radiology.features.cache import MODEL_POOLING, FeatureCache, default_cache_dir, feature_key

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from ssl_radiology.api.types import BackboneRef


def trained_image_size(spec: str) -> int | None:
    """The pre-training image size recorded beside an exported backbone (``backbone.json``), if any: the
    natural input size to evaluate it at when no image size is given."""
    path = Path(spec)
    for meta in (path / "backbone.json", path.with_suffix(".json")):
        if meta.is_file():
            try:
                return int(json.loads(meta.read_text())["image_size"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


@dataclass(frozen=True)
class FeatureOptions:
    """How features are computed (everything here except ``workers`` / ``device`` / ``cache_dir`` is part of
    the cache key). ``cache_dir=None`` means ``<cache_root()>/features``."""

    image_size: int
    window: tuple[float, float] = (40.0, 400.0)
    batch_size: int = 64
    workers: int = 0
    device: str | torch.device = "cpu"
    cache_dir: str | Path | None = None
    pooling: str = MODEL_POOLING


class FeatureExtractor:
    """One backbone reference: its condition hash, its weights (loaded once; random ones per seed) and
    cached features of any dataset identified by a fingerprint."""

    def __init__(self, ref: BackboneRef, options: FeatureOptions) -> None:
        from ssl_radiology.models import checkpoint_hash

        if ref.spec == "random" and not ref.architecture:
            raise UserError("--checkpoint random needs --backbone NAME")
        self.ref, self.options = ref, options
        self.is_random = ref.spec == "random"
        self.hash = (
            f"random-{ref.architecture}"
            if self.is_random
            else checkpoint_hash(ref.spec, backbone=ref.architecture)
        )
        self.cache = FeatureCache(Path(options.cache_dir) if options.cache_dir else default_cache_dir())
        self._model: nn.Module | None = None

    def weights_hash(self, seed: int | None = None) -> str:
        """The hash of the weights :meth:`model` returns for ``seed`` (default: the reference's seed)."""
        from ssl_radiology.models import checkpoint_hash

        if not self.is_random:
            return self.hash
        seed = self.ref.seed if seed is None else seed
        return checkpoint_hash(self.ref.spec, backbone=self.ref.architecture, seed=seed)

    def model(self, seed: int | None = None) -> nn.Module:
        """The backbone in eval mode; random weights are drawn from ``seed`` (default: the reference's)."""
        import torch

        from ssl_radiology.models import load_backbone

        size = self.options.image_size
        if self.is_random:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.ref.seed if seed is None else seed)
                model = load_backbone(self.ref.spec, backbone=self.ref.architecture, image_size=size)
            return model.eval()
        if self._model is None:
            self._model = load_backbone(self.ref.spec, backbone=self.ref.architecture, image_size=size).eval()
        return self._model

    def key(self, fingerprint: str, seed: int | None = None) -> str:
        o = self.options
        return feature_key(self.weights_hash(seed), fingerprint, o.image_size, o.window, o.pooling)

    def features(self, dataset: Dataset, fingerprint: str, seed: int | None = None) -> np.ndarray:
        """(N, D) float32 features of every item of ``dataset`` (identified by ``fingerprint``), cached."""
        from ssl_radiology.features.extract import extract_features

        key = self.key(fingerprint, seed)
        cached = self.cache.load(key, len(dataset))
        if cached is not None:
            return cached
        o = self.options
        features = extract_features(
            self.model(seed),
            dataset,
            image_size=o.image_size,
            batch_size=o.batch_size,
            device=o.device,
            window=o.window,
            workers=o.workers,
            pooling=o.pooling,
        )
        self.cache.save(key, features)
        return features
