"""Embeddings out (``ssl-rad embed``): pooled features, optionally patch tokens, with keys, to one file.

For users' own downstream work, in two formats chosen by the output suffix:

* ``FILE.parquet`` — one row per image: the key columns, ``features`` (list of D float32) and, with patch
  tokens, ``patch_tokens`` (list of T·C float32, row-major T × C). The schema metadata key
  ``ssl_radiology`` holds the provenance JSON (checkpoint, its hash, data fingerprint, image size, window,
  pooling, ``feature_dim``, ``patch_shape``). Read with ``pd.read_parquet`` and ``np.stack(df.features)``.
* ``FILE.npy`` — the (N, D) features; beside it ``FILE.keys.csv`` (key columns, same row order),
  ``FILE.json`` (provenance) and, with patch tokens, ``FILE.patch_tokens.npy`` (N, T, C).

Key columns: ``row`` (position in the data), whatever identifying-but-pseudonymous columns the prepared
manifest has (``file_key``, ``slice_index``, ``patient_key``, ``study_key``, ``series_key``, ``modality``,
``sex``, ``age_band``, ``site``; never a path), and for a labelled task its ``patient_key`` (the grouping
the evaluation splits by), ``split`` and labels: ``label`` + ``label_name`` (multi-class) or one
``label_<name>`` column per finding (multi-label; ``known_<name>`` where labels can be unknown). Fed to
:func:`ssl_radiology.features.knn.knn_probabilities` with bank = ``split in {train, val}`` and queries =
``split == test`` the features reproduce ``ssl-rad knn --fraction 1`` exactly (same cached features).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssl_radiology.errors import UserError

SUFFIXES = (".parquet", ".npy")
MANIFEST_KEYS = (
    "file_key", "slice_index", "patient_key", "study_key", "series_key", "modality", "sex", "age_band", "site",
)  # fmt: skip
METADATA_KEY = b"ssl_radiology"


def check_output(path: str | os.PathLike[str]) -> Path:
    """The output path, refused before any work when its suffix is not a supported format."""
    out = Path(path)
    if out.suffix not in SUFFIXES:
        raise UserError(f"--out {out}: write .parquet or .npy (got '{out.suffix or 'no suffix'}')")
    return out


def key_table(dataset: Any, task: Any = None) -> pd.DataFrame:
    """Per-image keys (module docstring) in dataset order; ``task`` is an evaluation ``Task`` or None."""
    keys = pd.DataFrame({"row": np.arange(len(dataset))})
    manifest = getattr(dataset, "manifest", None)
    if manifest is not None and len(manifest) == len(dataset):
        for column in MANIFEST_KEYS:
            if column in manifest:
                keys[column] = manifest[column].to_numpy()
    if task is None:
        return keys
    keys["patient_key"] = np.asarray(task.patients).astype(str)
    for column in ("sex", "age_band", "site"):
        if column not in keys and column in task.groups:
            keys[column] = task.groups[column].to_numpy()
    keys["split"] = np.asarray(task.split).astype(str)
    labels = np.asarray(task.labels)
    if task.kind == "multilabel":
        for j, name in enumerate(task.class_names):
            keys[f"label_{name}"] = labels[:, j]
            if task.label_mask is not None:
                keys[f"known_{name}"] = np.asarray(task.label_mask)[:, j]
    else:
        keys["label"] = labels.astype(np.int64)
        keys["label_name"] = np.asarray(task.class_names, dtype=object)[labels.astype(np.int64)]
    return keys


def _fixed_lists(values: np.ndarray):
    import pyarrow as pa

    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(len(values), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


def write_embeddings(
    path: str | os.PathLike[str],
    features: np.ndarray,
    keys: pd.DataFrame,
    metadata: dict[str, Any],
    patch_tokens: np.ndarray | None = None,
) -> list[Path]:
    """Write features (+ patch tokens) and keys as ``path`` says (module docstring); returns the files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = check_output(path)
    if len(features) != len(keys) or (patch_tokens is not None and len(patch_tokens) != len(keys)):
        raise ValueError(f"{len(keys)} key rows for {len(features)} feature rows")
    meta = {**metadata, "feature_dim": int(features.shape[1])}
    if patch_tokens is not None:
        meta["patch_shape"] = [int(n) for n in patch_tokens.shape[1:]]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        table = pa.Table.from_pandas(keys, preserve_index=False).append_column(
            "features", _fixed_lists(features)
        )
        if patch_tokens is not None:
            table = table.append_column("patch_tokens", _fixed_lists(patch_tokens))
        table = table.replace_schema_metadata({**table.schema.metadata, METADATA_KEY: json.dumps(meta)})
        pq.write_table(table, out)
        return [out]
    written = [out, out.with_suffix(".keys.csv"), out.with_suffix(".json")]
    np.save(out, np.ascontiguousarray(features, dtype=np.float32))
    keys.to_csv(written[1], index=False)
    written[2].write_text(json.dumps(meta, indent=2) + "\n")
    if patch_tokens is not None:
        written.append(out.with_suffix(".patch_tokens.npy"))
        np.save(written[-1], np.ascontiguousarray(patch_tokens, dtype=np.float32))
    return written
