"""Writing a prepared dataset: one chunk at a time, then the dataset-wide files once every chunk is done.

Order of writes (each atomic, :mod:`.shards`): a chunk writes its shards, then its manifest rows
(``parts/chunk-XXXXX.parquet``), then its marker (``parts/chunk-XXXXX.json``: input digest, size + SHA-256
of each file, rejected inputs), which makes it count as done. :func:`finalize` combines the chunks in chunk
order into ``manifest.parquet``, ``rejected.csv`` and ``integrity.json`` and writes ``prepared.json`` with
``"complete": true`` last. :func:`verify` re-reads every byte against the recorded checksums.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssl_radiology.data import keys, shards
from ssl_radiology.data.decode import FileResult
from ssl_radiology.data.layout import (
    INFO_FILE,
    INTEGRITY_FILE,
    MANIFEST_COLUMNS,
    MANIFEST_DTYPES,
    MANIFEST_FILE,
    PATHS_FILE,
    REJECTED_COLUMNS,
    REJECTED_FILE,
    chunk_index,
    damage,
    extension,
    file_record,
    marker_path,
    read_marker,
    rows_path,
    shard_path,
)
from ssl_radiology.data.plan import Unit


def write_chunk(out: Path, index: int, digest: str, results: Sequence[FileResult]) -> None:
    """Shards first, then the chunk's manifest rows, then the marker that makes the chunk count as done."""
    marker_path(out, index).unlink(missing_ok=True)
    rows: list[dict[str, Any]] = []
    by_dtype: dict[str, list[np.ndarray]] = {"int16": [], "uint16": []}
    for result in results:
        for image, row in zip(result.images, result.rows, strict=True):
            dtype = image.dtype.name
            shard = shard_path(out, index, dtype).relative_to(out).as_posix()
            rows.append({**row, "shard": shard, "offset": len(by_dtype[dtype])})
            by_dtype[dtype].append(image)
    records: dict[str, dict[str, Any]] = {}
    for dtype, images in by_dtype.items():
        path = shard_path(out, index, dtype)
        if images:
            shards.save_array(path, np.stack(images))
            records[dtype] = file_record(path)
        else:
            path.unlink(missing_ok=True)
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).astype(MANIFEST_DTYPES)
    shards.save_parquet(rows_path(out, index), frame)
    rejected = [[r.file_key, r.ext, r.root, r.reason] for r in results if r.reason is not None]
    marker = {
        "digest": digest,
        "shards": records,
        "rows": file_record(rows_path(out, index)),
        "rejected": rejected,
    }
    shards.save_json(marker_path(out, index), marker)


def problem_result(unit: Unit, secret: str) -> FileResult:
    """The rejected row of a path that was never opened (unreadable folder, FIFO, broken link, ...)."""
    return FileResult(unit.root, keys.file_key(unit.rel, secret), extension(unit.rel), reason=unit.problem)


def remove_stale_chunks(out: Path, n_chunks: int) -> None:
    """Chunks numbered beyond the current input list (files were removed) must not linger."""
    for folder in (out / "shards", out / "parts"):
        for path in folder.glob("chunk-*"):
            if chunk_index(path) >= n_chunks:
                path.unlink()


def finalize(
    out: Path, n_chunks: int, config: dict[str, Any], units: Sequence[Unit], secret: str, keep_paths: bool
) -> dict[str, Any]:
    """Combine the chunks (all done) into the dataset-wide files; ``prepared.json`` is written last."""
    remove_stale_chunks(out, n_chunks)
    frames = [pd.read_parquet(rows_path(out, i)) for i in range(n_chunks)]
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MANIFEST_COLUMNS)
    manifest = manifest.astype(MANIFEST_DTYPES)
    rejected_rows: list[list[Any]] = []
    integrity: dict[str, dict[str, Any]] = {}
    for i in range(n_chunks):
        marker = read_marker(out, i) or {}
        rejected_rows.extend(marker.get("rejected", []))
        for dtype, record in marker.get("shards", {}).items():
            integrity[shard_path(out, i, dtype).relative_to(out).as_posix()] = record
    rejected = pd.DataFrame(rejected_rows, columns=REJECTED_COLUMNS)
    shards.save_parquet(out / MANIFEST_FILE, manifest)
    shards.save_csv(out / REJECTED_FILE, rejected)
    shards.save_json(out / INTEGRITY_FILE, integrity)
    if keep_paths:
        write_paths(out, units, secret)
    info = {
        **config,
        "complete": True,
        "files": len(units),
        "slices": len(manifest),
        "rejected": len(rejected),
        "slices_by_modality": {str(k): int(v) for k, v in manifest["modality"].value_counts().items()},
        "rejected_by_reason": {str(k): int(v) for k, v in Counter(rejected["reason"]).most_common()},
        "manifest": file_record(out / MANIFEST_FILE),
        "rejected_file": file_record(out / REJECTED_FILE),
        "integrity": file_record(out / INTEGRITY_FILE),
    }
    shards.save_json(out / INFO_FILE, info)
    return info


def write_paths(out: Path, units: Sequence[Unit], secret: str) -> None:
    """``paths.csv``: file_key → source number and relative path (undecodable bytes as ``\\xNN``)."""
    rows = [
        [keys.file_key(u.rel, secret), u.root, os.fsencode(u.rel).decode("utf-8", "backslashreplace")]
        for u in units
    ]
    shards.save_csv(out / PATHS_FILE, pd.DataFrame(rows, columns=["file_key", "root", "path"]))
    warnings.warn(
        f"{out / PATHS_FILE} maps file keys back to file paths, which may contain patient names or IDs: "
        "keep it private and never share it with the dataset",
        stacklevel=2,
    )


def dataset_damage(out: Path, info: dict[str, Any], full: bool) -> list[str]:
    """Dataset-wide files that no longer match ``prepared.json``: sizes and the manifest's Parquet footer
    always (cheap), every checksum when ``full``."""
    import pyarrow.parquet as pq

    problems = []
    for name, key in (
        (MANIFEST_FILE, "manifest"),
        (REJECTED_FILE, "rejected_file"),
        (INTEGRITY_FILE, "integrity"),
    ):
        why = damage(out / name, info.get(key) or {}, full)
        if why:
            problems.append(f"{name}: {why}")
    if not problems:
        try:
            pq.read_metadata(out / MANIFEST_FILE)
        except Exception as exc:  # pyarrow's own error types for a damaged footer
            problems.append(f"{MANIFEST_FILE}: unreadable ({type(exc).__name__})")
    return problems


def verify(out: Path, info: dict[str, Any]) -> list[str]:
    """Every file of a finished dataset re-read against its recorded checksum; returns what is damaged."""
    problems = dataset_damage(out, info, full=True)
    try:
        integrity = json.loads((out / INTEGRITY_FILE).read_text())
    except (OSError, ValueError):
        return problems
    for name, record in sorted(integrity.items()):
        why = damage(out / name, record, full=True)
        if why:
            problems.append(f"{name}: {why}")
    return problems
