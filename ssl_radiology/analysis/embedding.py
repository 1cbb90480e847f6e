"""``ssl-rad embed`` as a function: a backbone's features of a source or task, with keys, to a file.

Features come from the feature layer with the settings of ``configs/eval/knn.yaml`` (window, batch size,
workers) at the size the evaluation would use (``--image-size``, else the size recorded with the run, else
the config's), so they are the very features ``ssl-rad knn`` scores — read from the same cache when it has
them. Patch tokens are computed in a second pass and never cached (T times larger). File formats and key
columns: :mod:`ssl_radiology.features.embed`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ssl_radiology.api.types import BackboneRef
from ssl_radiology.errors import UserError
from ssl_radiology.features.cache import MODEL_POOLING


def embed(
    backbone: BackboneRef,
    data: str,
    out: str | os.PathLike[str],
    *,
    patch_tokens: bool = False,
    image_size: int | None = None,
    pooling: str = MODEL_POOLING,
    device: str = "auto",
    feature_cache: str | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the embeddings; returns ``{"files", "rows", "feature_dim", "image_size", "checkpoint_hash"}``."""
    from ssl_radiology.analysis.sampling import open_entry
    from ssl_radiology.analysis.settings import load_settings
    from ssl_radiology.features.embed import check_output, key_table, write_embeddings
    from ssl_radiology.features.extract import FINAL_POOLINGS, extract_patch_tokens
    from ssl_radiology.features.extractor import FeatureExtractor, FeatureOptions, trained_image_size

    path = check_output(out)
    if pooling not in FINAL_POOLINGS:
        raise UserError(f"--pooling {pooling}: choose from {', '.join(FINAL_POOLINGS)}")
    size = image_size or trained_image_size(backbone.spec)
    settings = load_settings(size, overrides, device, feature_cache)
    options = FeatureOptions(
        image_size=settings.image_size,
        window=settings.window,
        batch_size=int(settings.cfg.batch_size),
        workers=int(settings.cfg.workers),
        device=settings.device,
        cache_dir=feature_cache,
        pooling=pooling,
    )
    extractor = FeatureExtractor(backbone, options)  # a bad checkpoint fails before the data is opened
    entry = open_entry(data, settings.image_size)
    features = extractor.features(entry.dataset, entry.fingerprint)
    tokens = None
    if patch_tokens:
        tokens = extract_patch_tokens(
            extractor.model(),
            entry.dataset,
            image_size=options.image_size,
            batch_size=options.batch_size,
            device=options.device,
            window=options.window,
            workers=options.workers,
        )
    metadata = {
        "checkpoint": backbone.spec,
        "architecture": backbone.architecture,
        "seed": backbone.seed,
        "checkpoint_hash": extractor.weights_hash(),
        "data": data,
        "data_fingerprint": entry.fingerprint,
        "image_size": options.image_size,
        "window": list(options.window),
        "pooling": pooling,
    }
    files = write_embeddings(path, features, key_table(entry.dataset, entry.task), metadata, tokens)
    return {
        "files": [str(f) for f in files],
        "rows": len(features),
        "feature_dim": int(features.shape[1]),
        "image_size": options.image_size,
        "checkpoint_hash": extractor.weights_hash(),
    }
