"""Keep a prepared copy of a dataset root in step with the root: fingerprint, compare, update or refuse.

A named source (``chexpert``, ``nih-cxr14``, ...) or a labelled task is prepared once into the cache and then
served from there. Without a check, a root that changed afterwards (more archives extracted, the variable
re-pointed, an ``.npz`` replaced) would keep serving the old preparation silently. So every preparation
records a fingerprint of its root next to ``prepared.json`` and every use compares it:

* the file list with sizes and modification times (a stat per file, no reading: 20,000 files in ~1 s on a
  busy 2-core machine, so ~10 s for all of CheXpert),
  restricted to the files ``prepare`` would take (``include``); for ``.npz`` files the content hash, because
  arrays can be rewritten in place with the same size;
* unchanged → served as is; changed → ``prepare`` runs again into the same folder, which redoes only the
  chunks whose files changed (its resume logic) and drops removed files;
* prepared from a *different* root folder (the variable now points elsewhere) → refused with a message,
  because mixing two datasets' chunks in one folder would be wrong and deleting a user's folder is not ours.

Only a digest and counts are stored, never the file names (they can hold patient IDs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from filelock import FileLock

from ssl_radiology.data import shards
from ssl_radiology.data.cache import cache_root
from ssl_radiology.data.prepare import INFO_FILE, prepare_dataset
from ssl_radiology.errors import UserError

STATE_FILE = "root-fingerprint.json"
DIGESTS_FILE = "digests.json"


def file_digest(path: Path, block: int = 1 << 22) -> str:
    """SHA-256 of a file's content, remembered per (path, size, mtime, ctime) in ``<cache>/digests.json``.

    A 224 px MedMNIST file is gigabytes, and every use of a source or task checks it; the inode change time
    (``st_ctime_ns``) moves with any write and cannot be set back by copying tools, so the memo is safe.
    """
    stat = path.stat()
    memo_path = cache_root() / DIGESTS_FILE
    ident = f"{path.resolve().as_posix()}\t{stat.st_size}\t{stat.st_mtime_ns}\t{stat.st_ctime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if ident in memo:
        return str(memo[ident])
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            sha.update(chunk)
    memo = {k: v for k, v in memo.items() if not k.startswith(f"{path.resolve().as_posix()}\t")}
    memo[ident] = sha.hexdigest()
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    shards.save_json(memo_path, memo)
    return sha.hexdigest()


def root_fingerprint(
    root: Path, include: Callable[[str], bool] | None = None, files: Iterable[str] | None = None
) -> dict[str, Any]:
    """``{"digest", "files", "bytes"}`` of the candidate image files (and ``.npz`` contents) under ``root``.

    ``files`` (paths relative to ``root``) replaces the walk when the caller knows the exact selection (a
    task's label table): only those are looked at, and a listed file that is missing counts as such.
    """
    from ssl_radiology.io import find_sources

    sha, count, total = hashlib.sha256(), 0, 0
    if files is not None:
        paths = [root / rel for rel in sorted(files)]
    else:
        paths = [root] if root.is_file() else find_sources(root) + sorted(root.rglob("*.npz"))
    for path in paths:
        rel = path.name if root.is_file() else path.relative_to(root).as_posix()
        if include is not None and path.suffix != ".npz" and not include(rel):
            continue
        if not path.is_file():
            sha.update(f"{rel}\tmissing\n".encode("utf-8", "surrogateescape"))
            continue
        stat = path.stat()
        content = file_digest(path) if path.suffix == ".npz" else str(stat.st_mtime_ns)
        sha.update(f"{rel}\t{stat.st_size}\t{content}\n".encode("utf-8", "surrogateescape"))
        count, total = count + 1, total + stat.st_size
    return {"digest": sha.hexdigest(), "files": count, "bytes": total}


def read_state(prepared: Path) -> dict[str, Any] | None:
    try:
        return json.loads((prepared / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def ensure_prepared(
    root: Path,
    prepared: Path,
    *,
    label: str,
    image_size: int,
    modality: str | None = None,
    identify: Callable[[str, Any], tuple[str | None, str | None]] | None = None,
    include: Callable[[str], bool] | None = None,
    workers: int | None = None,
    settings: dict[str, Any] | None = None,
    files: Iterable[str] | None = None,
) -> Path:
    """``prepared`` up to date with ``root`` (prepared on first use, updated when the root changed).

    ``label`` names the dataset in messages (``"data source 'chexpert' ($CHEXPERT_ROOT)"``); ``settings``
    (e.g. whether official test images are included) join the fingerprint, since they change what is taken;
    ``files`` limits the fingerprint to a known selection (see :func:`root_fingerprint`).
    """
    root = root.resolve()
    current = {"root": root.as_posix(), **root_fingerprint(root, include, files), "settings": settings or {}}
    if is_prepared(prepared) and read_state(prepared) == current:
        return prepared
    prepared.parent.mkdir(parents=True, exist_ok=True)
    # one process updates (DDP ranks, parallel jobs); the others wait, then find it current
    with FileLock(str(prepared.parent / f".{prepared.name}.lock")):
        return _update(root, prepared, current, label, image_size, modality, identify, include, workers)


def _update(
    root: Path,
    prepared: Path,
    current: dict[str, Any],
    label: str,
    image_size: int,
    modality: str | None,
    identify: Callable[[str, Any], tuple[str | None, str | None]] | None,
    include: Callable[[str], bool] | None,
    workers: int | None,
) -> Path:
    state = read_state(prepared)
    if state is not None and state.get("root") != current["root"]:
        raise UserError(
            f"{label}: {prepared} was prepared from {state.get('root')}, not {root}; point the variable "
            f"back, or delete {prepared} to prepare the new folder there"
        )
    complete = is_prepared(prepared)
    if complete and state == current:
        return prepared
    if complete and state is not None:
        print(
            f"{label}: {root} changed since it was prepared ({state.get('files')} -> {current['files']} files); "
            "updating the prepared copy (unchanged chunks are kept)"
        )
    elif not complete:
        print(f"preparing {label} from {root} into {prepared} (once; interrupt and re-run to resume)")
    if current["files"] == 0:
        raise UserError(f"{label}: no image files under {root}")
    prepare_dataset(
        root,
        prepared,
        image_size=image_size,
        modality=modality,
        workers=workers,
        identify=identify,
        include=include,
    )
    shards.save_json(prepared / STATE_FILE, current)
    return prepared


def is_prepared(prepared: Path) -> bool:
    """True for a folder whose ``prepare`` finished (``prepared.json`` says complete)."""
    try:
        return bool(json.loads((prepared / INFO_FILE).read_text()).get("complete"))
    except (OSError, ValueError):
        return False
