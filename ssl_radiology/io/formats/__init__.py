"""The reader registry: every file format ``ssl_radiology.io`` reads is one module in this package.

A format module calls :func:`register_format` with a :class:`Format`: a name, the suffixes it claims (for
MONAI's ``verify_suffix``), a ``sniff(head, path)`` test on the first bytes of a file, and a ``read(path,
modality, max_bytes) -> list[Slice]`` function keeping the conventions of :mod:`ssl_radiology.io`
(axes as stored, physical values, refusals as :class:`ReadError`, the memory bound checked before decoding).
:func:`formats` imports every module of this package once, so **adding a format is adding one file here**.
The same readers are exposed to MONAI through :class:`ssl_radiology.io.monai_reader.SliceReader`.

Formats are tried in ``priority`` order (higher first) on the file's first bytes; the one with
``fallback=True`` (DICOM without preamble, recognised only by parsing) takes whatever no sniff claimed.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ssl_radiology.io.slice import ReadError, Slice

Reader = Callable[[Path, "str | None", "int | None"], list[Slice]]


@dataclass(frozen=True)
class Format:
    """One readable file format (see the module docstring)."""

    name: str
    suffixes: tuple[str, ...]
    sniff: Callable[[bytes, Path], bool]
    read: Reader
    priority: int = 0
    fallback: bool = False


_REGISTRY: dict[str, Format] = {}
_LOADED = False


def register_format(fmt: Format) -> Format:
    """Add ``fmt`` to the registry (a second format of the same name is a programming error)."""
    if fmt.name in _REGISTRY:
        raise ValueError(f"format {fmt.name!r} is registered twice")
    _REGISTRY[fmt.name] = fmt
    return fmt


def formats() -> list[Format]:
    """Every registered format, highest priority first (imports this package's modules on first use)."""
    global _LOADED
    if not _LOADED:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _LOADED = True
    return sorted(_REGISTRY.values(), key=lambda fmt: -fmt.priority)


def get_format(name: str) -> Format:
    """The format called ``name``; a clear error listing the known ones otherwise."""
    known = {fmt.name: fmt for fmt in formats()}
    if name not in known:
        raise ValueError(f"unknown image format {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def find_format(head: bytes, path: Path, allowed: tuple[str, ...] | None = None) -> Format:
    """The format of a file from its first bytes (and name), among ``allowed`` names (default: all)."""
    candidates = [fmt for fmt in formats() if allowed is None or fmt.name in allowed]
    for fmt in candidates:
        if fmt.sniff(head, path):
            return fmt
    for fmt in candidates:
        if fmt.fallback:
            return fmt
    raise ReadError(path, f"not a {' or '.join(allowed or ())} file")
