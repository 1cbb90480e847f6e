"""Map-style dataset over a prepared folder: one memory-mapped slice per item, no decoding at training time.

Shards are ``np.load(mmap_mode="r")`` views opened lazily *in the process that reads them* and dropped when
the dataset is pickled, so DataLoader workers (fork or spawn) and ``DistributedSampler`` replicas each map
the files themselves and share the page cache. Per item the cost is one 2-D copy + a float32 conversion,
so random-order reads are not slower than sequential ones once the shards are cached.

Damaged data is named, not trusted: the manifest is checked against the size recorded in ``prepared.json``
and each shard, when first mapped, against the size in ``integrity.json`` and the shape its rows need; any
mismatch (or a file NumPy / Arrow cannot parse) is one :class:`UserError` naming the file and the repair
(``ssl-rad prepare --verify DIR`` compares every checksum; re-running the prepare command redoes what is
damaged). Flipped bytes that keep sizes intact are only found by ``--verify``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ssl_radiology.data.layout import FORMAT_VERSION, INFO_FILE, INTEGRITY_FILE, MANIFEST_FILE, damage
from ssl_radiology.errors import UserError


def damaged(root: Path, name: str, why: str) -> UserError:
    """The one error every reader raises for a damaged prepared file."""
    return UserError(
        f"{root / name}: damaged prepared data ({why}); check with 'ssl-rad prepare --verify {root}' and re-run "
        "the prepare command that made it to repair"
    )


def read_info(root: str | os.PathLike[str]) -> dict[str, Any]:
    """``prepared.json`` of a *finished* prepared folder; a clear error for anything else."""
    path = Path(root) / INFO_FILE
    if not path.is_file():
        raise UserError(
            f"{root} is not a prepared dataset (no {INFO_FILE}); run 'ssl-rad prepare SRC --out {root}'"
        )
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise damaged(Path(root), INFO_FILE, f"unreadable: {exc}") from exc
    if not isinstance(info, dict):
        raise damaged(Path(root), INFO_FILE, "not a JSON object")
    if not info.get("complete"):
        raise UserError(f"{root}: preparation did not finish; run the same 'ssl-rad prepare' command again")
    if info.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{root}: prepared with format version {info.get('format_version')}, this version reads "
            f"{FORMAT_VERSION}; prepare it again"
        )
    return info


def read_manifest(root: Path, info: dict[str, Any]) -> pd.DataFrame:
    """``manifest.parquet`` of a finished dataset, checked against the size recorded at prepare time."""
    why = damage(root / MANIFEST_FILE, info.get("manifest") or {}, full=False)
    if why:
        raise damaged(root, MANIFEST_FILE, why)
    try:
        return pd.read_parquet(root / MANIFEST_FILE)
    except Exception as exc:  # pyarrow raises its own types (ArrowInvalid, ...) for a damaged file
        raise damaged(root, MANIFEST_FILE, f"{type(exc).__name__}: {exc}") from exc


class PreparedDataset(Dataset):
    """Slices of a prepared folder as ``{"image": FloatTensor(1, S, S), "index": i, "modality": str}``.

    ``image`` holds physical values (HU for CT, 0..65535 otherwise). ``modality`` keeps only rows of the
    given modality (or list of modalities); ``indices`` then selects rows of that selection, in that order,
    so a split computed on ``PreparedDataset(root, modality="CT").manifest`` can be applied directly.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        modality: str | Sequence[str] | None = None,
        indices: Iterable[int] | None = None,
    ) -> None:
        self.root = Path(root)
        self.info = read_info(self.root)
        self.image_size = int(self.info["image_size"])
        manifest = read_manifest(self.root, self.info)
        if modality is not None:
            wanted = [modality] if isinstance(modality, str) else list(modality)
            manifest = manifest[manifest["modality"].isin([m.upper() for m in wanted])]
        if indices is not None:
            manifest = manifest.iloc[np.asarray(list(indices), dtype=np.int64)]
        self.manifest = manifest.reset_index(drop=True)
        self._shard_names: list[str] = sorted(self.manifest["shard"].unique())
        codes = {name: i for i, name in enumerate(self._shard_names)}
        self._shard_of = self.manifest["shard"].map(codes).to_numpy(np.int64)
        self._offset = self.manifest["offset"].to_numpy(np.int64)
        self._modality = self.manifest["modality"].to_numpy(str).tolist()
        self._rows_needed = np.zeros(len(self._shard_names), dtype=np.int64)
        np.maximum.at(self._rows_needed, self._shard_of, self._offset + 1)
        self._integrity: dict[str, Any] | None = None
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._offset)

    def _shard(self, code: int) -> np.ndarray:
        array = self._maps.get(code)
        if array is None:
            array = self._maps[code] = self._open_shard(code)
        return array

    def _open_shard(self, code: int) -> np.ndarray:
        """Map one shard, after checking its size against ``integrity.json`` and its shape against the rows."""
        name = self._shard_names[code]
        if self._integrity is None:
            try:
                self._integrity = json.loads((self.root / INTEGRITY_FILE).read_text())
            except (OSError, ValueError) as exc:
                raise damaged(self.root, INTEGRITY_FILE, f"unreadable: {exc}") from exc
        why = damage(self.root / name, self._integrity.get(name) or {}, full=False)
        if why:
            raise damaged(self.root, name, why)
        try:
            # a plain ndarray view of the map: indexing an np.memmap subclass costs ~3x more per item
            array = np.asarray(np.load(self.root / name, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise damaged(self.root, name, f"not a readable array: {exc}") from exc
        size = self.image_size
        if array.ndim != 3 or array.shape[1:] != (size, size) or len(array) < self._rows_needed[code]:
            raise damaged(
                self.root, name, f"shape {array.shape}, rows need {self._rows_needed[code]} × {size}²"
            )
        return array

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices")
        pixels = self._shard(int(self._shard_of[index]))[self._offset[index]]
        image = torch.from_numpy(pixels.astype(np.float32))[None]
        return {"image": image, "index": index, "modality": self._modality[index]}

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without open memmaps (nor the integrity records): each worker process maps and checks the
        shards itself on first use."""
        state = self.__dict__.copy()
        state["_maps"], state["_integrity"] = {}, None
        return state
