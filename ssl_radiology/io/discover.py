"""Finding the files under a folder that ``ssl-rad prepare`` should try to decode — and accounting for the
paths it cannot.

The decision to *try* a file is made from the name alone (hidden files, DICOMDIR and obviously non-image
extensions are skipped) because opening millions of files just to list them would cost as much as decoding
them; reading decides the rest, and a file that turns out not to be an image lands in ``rejected.csv`` with
its reason. DICOM files often have no extension at all, so "no extension" is a candidate.

Every other path under a source is *accounted for*, never silently dropped: :func:`walk_sources` returns a
:class:`Found` with a ``problem`` for a folder that cannot be listed, a broken or looping symbolic link, a
FIFO, socket or device (never opened: reading a FIFO blocks forever), and a symbolic link to a folder that
was already read (each real folder is walked once, so a link loop or a second link to one series neither
hangs nor duplicates slices). Symbolic links to folders are otherwise followed. Names that are not valid
UTF-8 are kept as Python's surrogate escapes, so the raw bytes survive (``os.fsencode``) for hashing.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
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
_FILE_TYPES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


@dataclass(frozen=True)
class Found:
    """One path under a source: a file to decode (``problem`` None) or a path that cannot be read, and why.

    ``rel`` is the posix path relative to the source root (the file name for a file root).
    """

    path: Path
    rel: str
    problem: str | None = None


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
    """Every candidate image file under ``root`` that can be opened as a regular file, sorted."""
    return [found.path for found in walk_sources(root) if found.problem is None]


def walk_sources(root: str | Path, exclude: Path | None = None) -> list[Found]:
    """Candidates and unreadable paths under ``root``, sorted by ``rel``; a file root is returned as is.

    Hidden folders (``.git``, ``.cache``) and ``exclude`` (the output folder, when it lies inside a source)
    are not entered. A DICOM series counts file by file: slice order comes from each file's geometry tags.
    """
    root = Path(root)
    if root.is_file():
        return [Found(root, root.name)]
    if not root.is_dir():
        raise ReadError(root, "no such file or folder")
    found: list[Found] = []
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, str]] = [(root, "")]
    excluded = _identity(exclude) if exclude is not None and exclude.is_dir() else None
    while stack:
        folder, prefix = stack.pop()
        identity = _identity(folder)
        if identity in seen:
            found.append(Found(folder, prefix.rstrip("/"), "symbolic link to a folder already read (loop)"))
            continue
        seen.add(identity)
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as exc:
            found.append(Found(folder, prefix.rstrip("/") or ".", f"folder unreadable ({_strerror(exc)})"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path, rel = Path(entry.path), prefix + entry.name
            if _is_dir(entry):
                if excluded is None or _identity(path) != excluded:
                    stack.append((path, rel + "/"))
            elif is_candidate(path):
                found.append(Found(path, rel, None if _is_file(entry) else _not_a_file(path)))
    return sorted(found, key=lambda item: item.rel)


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file(follow_symlinks=True)
    except OSError:
        return False


def _not_a_file(path: Path) -> str:
    """Why a candidate name is not a regular file: a broken or looping link, a FIFO, a device, ..."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if path.is_symlink():
            return "broken symbolic link (its target does not exist)"
        return f"cannot stat ({_strerror(exc)})"
    for test, what in _FILE_TYPES:
        if test(mode):
            return f"not a regular file ({what}); not opened"
    return "not a regular file; not opened"


def _strerror(exc: OSError) -> str:
    """The OS's words for an error, without the file name it carries (names may identify patients)."""
    return exc.strerror or type(exc).__name__
