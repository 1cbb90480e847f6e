"""Our readers behind MONAI's ``ImageReader`` protocol, so MONAI pipelines get our pixels.

``monai.transforms.LoadImage(reader=SliceReader("dicom"))`` loads a DICOM file or series folder with
:func:`ssl_radiology.io.read_slices`: Hounsfield units through the modality LUT (per frame for enhanced
multi-frame files), MONOCHROME1 shown higher = brighter, refusals with a reason — and users compose MONAI
transforms on the result. ``SliceReader()`` reads every format of the registry
(:mod:`ssl_radiology.io.formats`, which itself plugs MONAI's NRRD / ITK readers in as extra formats).

Axes follow MONAI, not ``ssl_radiology.io``: MONAI's 2-D readers return ``(columns, rows)`` (x first), so
``get_data`` returns each slice transposed (``slice.pixels.T``) and stacks the slices of a file or series
on the last axis: ``(x, y)`` for one slice, ``(x, y, slice)`` for several; several files stack on a new
first (channel) axis. The metadata holds the spacing, the modality and a diagonal affine — never an
identifier (MONAI adds the file name).

This module imports MONAI (and so torch): import it where MONAI is wanted, not in decoding workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple

from ssl_radiology.io import read_slices
from ssl_radiology.io.formats import get_format
from ssl_radiology.io.slice import Slice


class SliceReader(ImageReader):
    """MONAI ``ImageReader`` over the ``ssl_radiology`` reader registry (see the module docstring).

    ``formats``: a registered format name or names (``"dicom"``, ``"nifti"``, ``"image"``, ``"nrrd"``, ...);
    default all. ``modality``: for files that carry none. ``max_bytes``: refuse larger decoded images.
    """

    def __init__(
        self,
        formats: str | Sequence[str] | None = None,
        modality: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        super().__init__()
        names = (formats,) if isinstance(formats, str) else tuple(formats) if formats else None
        self.formats = tuple(get_format(name).name for name in names) if names else None
        self.modality = modality
        self.max_bytes = max_bytes

    def verify_suffix(self, filename: Sequence[Any] | Any) -> bool:
        """Whether every name has a suffix one of this reader's formats claims (a folder: a DICOM series)."""
        from ssl_radiology.io.formats import formats

        allowed = [fmt for fmt in formats() if self.formats is None or fmt.name in self.formats]
        suffixes = tuple(s for fmt in allowed for s in fmt.suffixes if s)
        bare = any("" in fmt.suffixes for fmt in allowed)  # DICOM files often have no extension
        return all(
            Path(name).is_dir() or str(name).lower().endswith(suffixes) or (bare and not Path(name).suffix)
            for name in ensure_tuple(filename)
        )

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> list[list[Slice]]:
        """The slices of each file (or series folder) named in ``data``."""
        return [read_slices(path, self.modality, self.max_bytes, self.formats) for path in ensure_tuple(data)]

    def get_data(self, img: list[list[Slice]]) -> tuple[np.ndarray, dict[str, Any]]:
        """``(array, meta)`` in MONAI's axis order (see the module docstring)."""
        arrays = [_volume(slices) for slices in img]
        if any(array.shape != arrays[0].shape for array in arrays):
            raise ValueError(f"files of different shapes cannot be stacked: {[a.shape for a in arrays]}")
        first = img[0][0]
        array = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        spatial = arrays[0].shape
        row_mm, col_mm = first.spacing or (1.0, 1.0)
        spacing = [col_mm, row_mm] + [_slice_step(img[0])] * (len(spatial) - 2)
        affine = np.diag([*spacing, 1.0])
        meta = {
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(spatial),
            "original_channel_dim": float("nan") if len(arrays) == 1 else 0,
            "spacing": np.asarray(spacing),
            "modality": first.modality,
        }
        return array, meta


def _volume(slices: list[Slice]) -> np.ndarray:
    if len(slices) == 1:
        return slices[0].pixels.T
    shapes = {item.pixels.shape for item in slices}
    if len(shapes) > 1:
        raise ValueError(f"slices of different shapes cannot be stacked: {sorted(shapes)}")
    return np.stack([item.pixels.T for item in slices], axis=-1)


def _slice_step(slices: list[Slice]) -> float:
    """Mean distance between consecutive slice positions (1 mm when positions are unknown)."""
    positions = [item.position for item in slices]
    if len(positions) < 2 or any(p is None for p in positions):
        return 1.0
    return float(np.mean(np.abs(np.diff(np.asarray(positions, dtype=np.float64))))) or 1.0
