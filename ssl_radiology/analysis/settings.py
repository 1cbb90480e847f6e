"""What every analysis shares: input size, the eval config (window, batch size, workers, kNN), the device,
the feature cache, the layer pooling — and backbone features through :mod:`ssl_radiology.features`.

The settings come from ``configs/eval/knn.yaml`` so that ``ssl-rad analyze`` extracts exactly the features
``ssl-rad knn`` extracts (same window, same cache key); the two commands never compute them twice.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ssl_radiology.api.types import BackboneRef
from ssl_radiology.errors import UserError
from ssl_radiology.features.layers import DEFAULT_POOLING, POOLINGS

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig
    from torch import nn

    from ssl_radiology.features.extractor import FeatureExtractor


@dataclass
class Settings:
    """Shared settings; ``pooling`` is how layer activations become vectors (layer CKA, per-layer kNN)."""

    image_size: int
    cfg: DictConfig
    device: torch.device
    feature_cache: str | None = None
    pooling: str = DEFAULT_POOLING
    _extractors: dict[BackboneRef, FeatureExtractor] = field(default_factory=dict, repr=False)

    @property
    def window(self) -> tuple[float, float]:
        return float(self.cfg.window[0]), float(self.cfg.window[1])

    @property
    def num_threads(self) -> int | None:
        threads = self.cfg.get("threads")
        return None if threads is None else int(threads)

    def extractor(self, ref: BackboneRef) -> FeatureExtractor:
        """The feature extractor of ``ref`` (one per reference, so a model is loaded once per run)."""
        from ssl_radiology.features.extractor import FeatureExtractor, FeatureOptions

        if ref not in self._extractors:
            options = FeatureOptions(
                image_size=self.image_size,
                window=self.window,
                batch_size=int(self.cfg.batch_size),
                workers=int(self.cfg.workers),
                device=self.device,
                cache_dir=self.feature_cache,
            )
            self._extractors[ref] = FeatureExtractor(ref, options)
        return self._extractors[ref]

    def batches(self, dataset: Any, shuffle_seed: int | None = None):
        """Model input batches of ``dataset`` on the device, as feature extraction builds them."""
        from ssl_radiology.features.extract import model_batches

        return model_batches(
            dataset,
            image_size=self.image_size,
            window=self.window,
            batch_size=int(self.cfg.batch_size),
            device=self.device,
            workers=int(self.cfg.workers),
            shuffle_seed=shuffle_seed,
        )


def load_settings(
    image_size: int | None = None,
    overrides: Sequence[str] = (),
    device: str = "auto",
    feature_cache: str | None = None,
    pooling: str = DEFAULT_POOLING,
) -> Settings:
    """Settings from ``configs/eval/knn.yaml`` (the source of the shared feature window and kNN protocol)."""
    from ssl_radiology.config import apply_overrides, load_group
    from ssl_radiology.features.extract import resolve_device

    if pooling not in POOLINGS:
        raise UserError(f"--pooling {pooling}: choose from {', '.join(POOLINGS)}")
    cfg = apply_overrides(load_group("eval", "knn"), list(overrides))
    size = int(image_size if image_size is not None else cfg.image_size)
    return Settings(size, cfg, resolve_device(device), feature_cache, pooling)


def distinct_labels(refs: Sequence[BackboneRef]) -> list[BackboneRef]:
    """The references with unique display names (figures are named after them): a repeated derived name
    gets ``-2``, ``-3``, ... (e.g. two run folders both called "dino"); repeated explicit names are an error."""
    if not refs:
        raise UserError("give at least one --checkpoint")
    explicit = [r.name for r in refs if r.name]
    if len(set(explicit)) != len(explicit):
        raise UserError(f"--name values must be distinct, got {explicit}")
    seen: dict[str, int] = {}
    unique = []
    for ref in refs:
        seen[ref.label] = seen.get(ref.label, 0) + 1
        if ref.name or seen[ref.label] == 1:
            unique.append(ref)
        else:
            unique.append(replace(ref, name=f"{ref.label}-{seen[ref.label]}"))
    return unique


def backbone_refs(
    specs: Sequence[str], names: Sequence[str] | None, architecture: str | None, seed: int = 0
) -> list[BackboneRef]:
    """Pair ``--checkpoint`` values with ``--name`` values (default: derived from the spec, made unique)."""
    if names and len(names) != len(specs):
        raise UserError(
            f"{len(names)} --name values for {len(specs)} --checkpoint values; give one per checkpoint"
        )
    paired = names or [None] * len(specs)
    return distinct_labels(
        [BackboneRef(s, architecture, n, seed) for s, n in zip(specs, paired, strict=True)]
    )


def slug(name: str) -> str:
    """A file-name-safe form of a display name (``umap_<slug>.png``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "checkpoint"


def final_features(ref: BackboneRef, target: Any, settings: Settings) -> np.ndarray:
    """(N, D) cached backbone features of every image of ``target`` (a task or a
    :class:`~ssl_radiology.analysis.sampling.DomainSample`: anything with ``dataset`` and ``fingerprint``)."""
    return settings.extractor(ref).features(target.dataset, target.fingerprint)


def load_model(ref: BackboneRef, settings: Settings) -> nn.Module:
    """The backbone on the device with exactly the weights :func:`final_features` used."""
    return settings.extractor(ref).model().to(settings.device)
