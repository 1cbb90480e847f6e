"""The on-disk layout of a prepared dataset: file names, manifest columns, and what makes a chunk trusted.

::

    DIR/prepared.json            settings, key fingerprint, counts; "complete": true only when all is written
    DIR/manifest.parquet         one row per slice (MANIFEST_COLUMNS), no path or identifier in clear
    DIR/rejected.csv             file_key, ext, root, reason for every input that gave no slice
    DIR/integrity.json           size + SHA-256 of every shard and of the manifest (checked by readers/verify)
    DIR/paths.csv                only with --keep-paths: file_key -> path (holds identifiers: do not share)
    DIR/shards/chunk-XXXXX-{int16,uint16}.npy
    DIR/parts/chunk-XXXXX.parquet + chunk-XXXXX.json   per-chunk rows, and the marker that makes it count

A chunk counts as done only when its marker exists, its input digest matches the files on disk, and its
shard / rows files have the recorded sizes (and, when verifying, the recorded SHA-256): a chunk damaged
after the fact is redone by the next ``prepare``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FORMAT_VERSION = 2
#: files per resumable chunk (the unit of resume, repair and sharding)
CHUNK_FILES = 512
#: modalities a user may name for files without one (DICOM files keep their own)
MODALITIES = ("CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "RF", "XA", "IO", "PX", "OT")
INFO_FILE = "prepared.json"
MANIFEST_FILE = "manifest.parquet"
REJECTED_FILE = "rejected.csv"
INTEGRITY_FILE = "integrity.json"
PATHS_FILE = "paths.csv"
LOCK_FILE = ".prepare.lock"
MANIFEST_COLUMNS = [
    "shard", "offset", "modality", "root", "file_key", "ext", "slice_index", "patient_key", "study_key",
    "series_key", "spacing_row", "spacing_col", "sex", "age_band", "site",
]  # fmt: skip
MANIFEST_DTYPES = {"offset": "int64", "root": "int64", "slice_index": "int64"}
REJECTED_COLUMNS = ["file_key", "ext", "root", "reason"]
#: extensions recorded in the manifest; anything else is "" (a suffix can be part of a name: "Doe.John")
KNOWN_EXTENSIONS = (
    ".nii.gz", ".nii", ".dcm", ".dicom", ".ima", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".nrrd", ".nhdr",
    ".mha", ".mhd",
)  # fmt: skip


def extension(rel: str) -> str:
    """The file's extension when it is a known image extension (lower case), else ``""``."""
    lower = rel.rsplit("/", 1)[-1].lower()
    return next((ext for ext in KNOWN_EXTENSIONS if lower.endswith(ext)), "")


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}"


def chunk_index(path: Path) -> int:
    """``chunk-00012-int16.npy`` / ``chunk-00012.json`` → 12."""
    return int(path.name.split("-")[1].split(".")[0])


def shard_path(out: Path, index: int, dtype: str) -> Path:
    return out / "shards" / f"{chunk_name(index)}-{dtype}.npy"


def marker_path(out: Path, index: int) -> Path:
    return out / "parts" / f"{chunk_name(index)}.json"


def rows_path(out: Path, index: int) -> Path:
    return out / "parts" / f"{chunk_name(index)}.parquet"


def file_record(path: Path) -> dict[str, Any]:
    """Size and SHA-256 of a file, as written into markers and ``integrity.json``."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            sha.update(block)
    return {"size": path.stat().st_size, "sha256": sha.hexdigest()}


def damage(path: Path, record: dict[str, Any], full: bool) -> str | None:
    """Why ``path`` no longer matches ``record`` (missing, other size, other content), or None."""
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    if size != record.get("size"):
        return f"size {size} bytes, {record.get('size')} expected"
    if full and file_record(path)["sha256"] != record.get("sha256"):
        return "content changed (checksum mismatch)"
    return None


def read_marker(out: Path, index: int) -> dict[str, Any] | None:
    try:
        marker = json.loads(marker_path(out, index).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def chunk_damage(out: Path, index: int, digest: str, full: bool = False) -> str | None:
    """None when chunk ``index`` is done and intact; else why it must be (re)done."""
    marker = read_marker(out, index)
    if marker is None:
        return "not written"
    if marker.get("digest") != digest:
        return "inputs changed"
    files = {rows_path(out, index): marker.get("rows", {})}
    files.update({shard_path(out, index, dtype): rec for dtype, rec in marker.get("shards", {}).items()})
    for path, record in files.items():
        why = damage(path, record, full)
        if why:
            return f"{path.relative_to(out).as_posix()}: {why}"
    return None
