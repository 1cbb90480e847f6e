"""What ``prepare`` has to do: every path under the sources, cut into fixed, numbered chunks, and which
chunks belong to which part of a sharded run.

The plan is a pure function of the sources on disk (sorted relative paths, sizes, modification times), so
every process — a resumed run, or the N parts of ``--shard I/N`` on N machines — derives the same chunks
with the same numbers, and the merged dataset is row for row the dataset a single process would write.
Chunk ``c`` belongs to part ``c mod N``: round-robin keeps the parts balanced when one folder is much
larger than another. A file gives slices in one chunk only, so a DICOM series split across parts still
keeps its order: rows are combined in chunk order, and within a chunk in file order.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ssl_radiology.errors import UserError
from ssl_radiology.io.discover import walk_sources


@dataclass(frozen=True)
class Unit:
    """One path under source number ``root``: a file to decode, or (``problem``) a path that cannot be."""

    root: int
    path: Path
    rel: str
    problem: str | None = None


def walk(roots: Sequence[Path], out: Path, include: Callable[[str], bool] | None = None) -> list[Unit]:
    """Every unit under ``roots`` in a deterministic order; ``out`` is not entered (it may lie inside a
    source); ``include(rel)`` filters files (paths that cannot be read are always listed)."""
    units: list[Unit] = []
    for index, root in enumerate(roots):
        for found in walk_sources(root, exclude=out):
            if found.problem is None and _inside(found.path, out):
                continue
            if found.problem is None and include is not None and not include(found.rel):
                continue
            units.append(Unit(index, found.path, found.rel, found.problem))
    return units


def _inside(path: Path, out: Path) -> bool:
    return path.parts[: len(out.parts)] == out.parts


def digest(units: Sequence[Unit]) -> str:
    """Identity of a chunk's inputs: names, sizes, modification times and problems (a change redoes it)."""
    sha = hashlib.sha256()
    for unit in units:
        try:
            info = unit.path.stat()
            state = f"{info.st_size}\t{info.st_mtime_ns}"
        except OSError:
            state = "missing"
        sha.update(os.fsencode(unit.rel) + f"\t{unit.root}\t{state}\t{unit.problem}\n".encode())
    return sha.hexdigest()


def chunked(units: list[Unit], chunk_files: int) -> list[list[Unit]]:
    return [units[i : i + chunk_files] for i in range(0, len(units), chunk_files)]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` → (2, 8); a clear error for anything that is not ``I/N`` with ``0 <= I < N``."""
    head, sep, tail = str(text).partition("/")
    try:
        index, count = int(head), int(tail)
    except ValueError:
        index, count = -1, 0
    if not sep or count < 1 or not 0 <= index < count:
        raise UserError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return index, count


def part_chunks(n_chunks: int, shard: tuple[int, int] | None) -> list[int]:
    """The chunk numbers part ``shard`` = (I, N) prepares (all of them without a shard)."""
    if shard is None:
        return list(range(n_chunks))
    index, count = shard
    return list(range(index, n_chunks, count))
