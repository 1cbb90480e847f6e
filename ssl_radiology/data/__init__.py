"""Prepared datasets: ``prepare_dataset`` writes them, ``PreparedDataset`` reads them, ``resolve_source``
turns a name (``phantom``, ``radnet``, ...) or a folder into one.

Attributes are imported on first access so that ``import ssl_radiology.data`` stays cheap (no torch) and
works while optional parts (the phantom generator) are absent.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PreparedDataset": "ssl_radiology.data.prepared",
    "prepare_dataset": "ssl_radiology.data.prepare",
    "PrepareSummary": "ssl_radiology.data.prepare",
    "resolve_source": "ssl_radiology.data.sources",
    "open_source": "ssl_radiology.data.sources",
    "generate_phantom": "ssl_radiology.data.phantom",
    "hash_key": "ssl_radiology.data.keys",
    "patient_key": "ssl_radiology.data.keys",
    "file_key": "ssl_radiology.data.keys",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ssl_radiology.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
