"""Finding the files under a folder that ``ssl-rad prepare`` should try to decode.

The decision is made from the name alone (hidden files, DICOMDIR and obviously non-image extensions are
skipped) because opening millions of files just to list them would cost as much as decoding them; reading
decides the rest, and a file that turns out not to be an image lands in ``rejected.csv`` with its reason.
DICOM files often have no extension at all, so "no extension" is a candidate.
"""

from __future__ import annotations

import os
from pathlib import Path

from ssl_radiology.io.slice import ReadError

# Extensions that are never images (sidecars, labels, notes, archives, code, arrays).
NON_IMAGE_SUFFIXES = frozenset(
    {
        ".csv", ".tsv", ".json", ".txt", ".md", ".rst", ".yaml", ".yml", ".xml", ".html", ".htm", ".pdf",
        ".doc", ".docx", ".xls", ".xlsx", ".py", ".ipynb", ".sh", ".log", ".ini", ".cfg", ".toml",
        ".parquet", ".npy", ".npz", ".pkl", ".pt", ".ckpt", ".safetensors", ".zip", ".tar", ".tgz", ".7z",
        ".bval", ".bvec", ".mat", ".h5", ".hdf5", ".db", ".sqlite", ".lock", ".icc",
    }
)  # fmt: skip


def is_candidate(path: Path) -> bool:
    """Whether the file name alone allows ``path`` to be an image (DICOM, NIfTI, PNG, JPEG, TIFF)."""
    name = path.name
    if name.startswith(".") or name.upper() == "DICOMDIR":
        return False
    lower = name.lower()
    if lower.endswith(".gz"):
        return lower.endswith(".nii.gz")
    return path.suffix.lower() not in NON_IMAGE_SUFFIXES


def find_sources(root: str | Path) -> list[Path]:
    """Every candidate image file under ``root``, recursively and sorted; a file root is returned as is.

    A DICOM series counts file by file: the slice order comes from each file's geometry tags, not from
    how files are grouped here. Hidden folders (``.git``, ``.cache``) are not entered.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise ReadError(root, "no such file or folder")
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(path for path in (Path(folder, name) for name in files) if is_candidate(path))
    return sorted(found)
