"""On-disk feature cache: one ``<key>.npy`` per (weights, data, image size, window, pooling).

kNN and both linear protocols read the same cached array, and ``ssl-rad analyze`` / ``ssl-rad embed`` share
it, so sweeping k, C or a learning rate never runs the backbone again. The key covers everything that
changes the feature values and nothing else (not the output folder, not the display name), so two commands
that need the same features find them. Writes are atomic (temp file + rename): an interrupted run never
leaves a truncated array that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: the backbone's own output (timm's pooled features: CLS token of a ViT, global average of a CNN)
MODEL_POOLING = "model"


def default_cache_dir() -> Path:
    """``<cache_root()>/features`` (``$SSL_RAD_CACHE`` or ``~/.cache/ssl-radiology``)."""
    from ssl_radiology.data.sources import cache_root

    return cache_root() / "features"


def feature_key(
    weights_hash: str,
    data_fingerprint: str,
    image_size: int,
    window: Sequence[float],
    pooling: str = MODEL_POOLING,
) -> str:
    """Cache key: everything that changes the feature values."""
    parts = [weights_hash, data_fingerprint, int(image_size), [float(w) for w in window], str(pooling)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class FeatureCache:
    """A folder of cached feature arrays."""

    root: Path

    def path(self, key: str) -> Path:
        return Path(self.root) / f"{key}.npy"

    def load(self, key: str, rows: int) -> np.ndarray | None:
        """The cached array, or None when absent or of another length (the data changed under the key)."""
        path = self.path(key)
        if not path.is_file():
            return None
        cached = np.load(path)
        return cached if len(cached) == rows else None

    def save(self, key: str, features: np.ndarray) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as handle:
            np.save(handle, features)
        os.replace(tmp, path)
        return path
