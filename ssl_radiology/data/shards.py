"""Atomic writes for prepared datasets: a file either has its final content or does not exist.

Every output of ``prepare`` is written under a temporary name in the same folder and then renamed with
``os.replace`` (atomic on POSIX and Windows within one file system), so a run killed at any moment leaves
only ``*.tmp-*`` files behind, which nothing reads and the next run deletes.

A write that fails for lack of space (``ENOSPC`` / ``EDQUOT``, or numpy's errno-less "N requested and M
written") removes its temporary file and raises one clear :class:`UserError`:
``disk full while writing <file>: free N MB``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssl_radiology.errors import UserError

TMP_MARK = ".tmp-"
_FULL = (errno.ENOSPC, errno.EDQUOT)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


def free_mb(folder: Path) -> int:
    """Free space (MB) on the file system holding ``folder``."""
    try:
        return shutil.disk_usage(folder).free // 2**20
    except OSError:
        return 0


@contextlib.contextmanager
def _disk_full_is_user_error(path: Path, tmp: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        free = free_mb(path.parent)
        # numpy's tofile/save reports a short write as an OSError without errno ("N requested and M written")
        text = str(exc)
        if exc.errno in _FULL or "No space left" in text or (exc.errno is None and "written" in text):
            raise UserError(
                f"disk full while writing {path}: free {free} MB; free space and run the same command "
                "again (finished work is kept)"
            ) from exc
        raise


def _write(path: Path, writer: Callable[[Path], None]) -> None:
    """``writer(tmp)``, flush ``tmp`` to disk, rename it to ``path`` (a power cut cannot leave a renamed but
    empty file)."""
    tmp = _tmp_name(path)
    with _disk_full_is_user_error(path, tmp):
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)

    _write(path, write)


def save_text(path: Path, text: str) -> None:
    _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_json(path: Path, obj: Any) -> None:
    save_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_parquet(path: Path, frame: pd.DataFrame) -> None:
    _write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def save_csv(path: Path, frame: pd.DataFrame) -> None:
    _write(path, lambda tmp: frame.to_csv(tmp, index=False))


def remove_temporaries(folder: Path, keep: Callable[[Path], bool] = lambda path: False) -> int:
    """Delete leftovers of killed runs under ``folder`` (except those ``keep`` names: files another process
    may be writing right now); returns how many were removed."""
    stale = [p for p in folder.rglob(f"*{TMP_MARK}*") if p.is_file() and not keep(p)]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
