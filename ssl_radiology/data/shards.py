"""Atomic writes for prepared datasets: a file either has its final content or does not exist.

Every output of ``prepare`` is written under a temporary name in the same folder and then renamed with
``os.replace`` (atomic on POSIX and Windows within one file system), so a run killed at any moment leaves
only ``*.tmp-*`` files behind, which nothing reads and the next run deletes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TMP_MARK = ".tmp-"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


def _commit(tmp: Path, path: Path) -> None:
    """Flush ``tmp`` to disk before renaming, so a power cut cannot leave a renamed but empty file."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_array(path: Path, array: np.ndarray) -> int:
    """Write ``array`` as ``.npy`` atomically; returns the file size (recorded to detect later damage)."""
    tmp = _tmp_name(path)
    with open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    _commit(tmp, path)
    return path.stat().st_size


def save_text(path: Path, text: str) -> None:
    tmp = _tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    _commit(tmp, path)


def save_json(path: Path, obj: Any) -> None:
    save_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_parquet(path: Path, frame: pd.DataFrame) -> None:
    tmp = _tmp_name(path)
    frame.to_parquet(tmp, index=False)
    _commit(tmp, path)


def save_csv(path: Path, frame: pd.DataFrame) -> None:
    tmp = _tmp_name(path)
    frame.to_csv(tmp, index=False)
    _commit(tmp, path)


def remove_temporaries(folder: Path) -> int:
    """Delete leftovers of killed runs under ``folder``; returns how many were removed."""
    stale = [p for p in folder.rglob(f"*{TMP_MARK}*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
