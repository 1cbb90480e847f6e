"""Reading one radiology source into :class:`Slice` objects in physical values.

Conventions every reader keeps (details in each module's docstring):

- **Axis**: ``pixels[row, column]`` exactly as stored (DICOM rows × columns, PNG height × width). NIfTI is
  reoriented to RAS+ and axial slice ``k`` is returned as ``volume[::-1, ::-1, k].T``: rows anterior →
  posterior, columns patient-right → left, i.e. exactly how an axial DICOM slice is stored (radiological
  view). MONAI's ``LoadImage`` returns 2-D DICOM/PNG images transposed (columns × rows) relative to this;
  the tests pin that down.
- **Values**: float32. DICOM goes through the modality LUT (``pydicom.pixels.apply_modality_lut``, per
  frame for enhanced multi-frame files), so CT is in Hounsfield units; no VOI/window is applied. Everything
  that is not CT or PT is "higher = brighter": MONOCHROME1 or Presentation LUT Shape INVERSE is inverted
  once within the range the stored values can take after the modality LUT. NIfTI: scl_slope/scl_inter
  applied by nibabel. PNG/JPEG/TIFF: stored values; colour → ITU-R BT.601 luma.
- **Modality**: DICOM's Modality tag wins; otherwise the caller's ``modality``; otherwise ``"CT"`` for
  NIfTI and ``"OT"`` for PNG/JPEG/TIFF (and DICOM without a Modality tag).
- **Order**: a DICOM series folder is sorted by position along the slice normal
  (``ImagePositionPatient · (row × column cosines)``), falling back to Instance Number only when geometry is
  missing; a multi-frame file keeps its frame order; NIfTI runs inferior → superior. ``index`` is the
  position in the returned list.
- **Refused** with :class:`ReadError` (``str() == "<path>: <reason>"``): empty, truncated or non-image
  files, DICOM colour images, Segmentation / RT Structure Set, Dose, Plan / presentation states /
  structured reports / waveforms / encapsulated documents / DICOMDIR, missing pixel data, transfer syntaxes
  without an installed decoder (the reason names the plugin), 4-D NIfTI with more than one volume.
- **Formats**: one module each in :mod:`ssl_radiology.io.formats` (the reader registry: adding a format is
  adding one file there); MONAI's NRRD / ITK readers plug in as extra formats when installed, and
  :class:`ssl_radiology.io.monai_reader.SliceReader` puts all of them behind MONAI's ``ImageReader``.
- **Memory**: ``max_bytes`` refuses a file before decoding when its header claims more (:mod:`.limits`);
  a FIFO or device is never opened.
- **Privacy**: raw patient/study/series identifiers only travel in the ``Slice`` fields for hashing;
  ``attributes`` holds sex, 10-year age band (90+ pooled) and scanner model only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ssl_radiology.io.dicom import read_dicom_series
from ssl_radiology.io.discover import find_sources, walk_sources
from ssl_radiology.io.formats import find_format
from ssl_radiology.io.slice import ReadError, Slice

__all__ = ["ReadError", "Slice", "find_sources", "read_slices", "walk_sources"]

_HEADER_BYTES = 540  # a NIfTI-2 header; also covers NIfTI-1 (348) and DICOM's 128-byte preamble + "DICM"


def read_slices(
    path: str | Path,
    modality: str | None = None,
    max_bytes: int | None = None,
    formats: tuple[str, ...] | None = None,
) -> list[Slice]:
    """Slices of a DICOM file or series folder, a NIfTI volume, a PNG/JPEG/TIFF image, or any format of the
    reader registry (:mod:`ssl_radiology.io.formats`; ``formats`` restricts it to those names).

    The format is decided from the first bytes (DICM prefix, PNG/JPEG/TIFF/NIfTI/NRRD magic), the name only
    for gzip-compressed NIfTI, and a forced DICOM parse for everything else (DICOM without preamble).
    ``max_bytes`` bounds the decoded size of one file (see :mod:`ssl_radiology.io.limits`); a file larger
    than it on disk is refused without being read.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, modality, max_bytes)
    head = _head(path, max_bytes)
    fmt = find_format(head, path, formats)
    if fmt.fallback and head.startswith(b"\x1f\x8b"):
        raise ReadError(path, "gzip-compressed file that is not a .nii.gz NIfTI volume")
    return fmt.read(path, modality, max_bytes)


def _head(path: Path, max_bytes: int | None) -> bytes:
    """The first bytes of a *regular* file. Opened non-blocking and checked with ``fstat`` before reading,
    so a FIFO or device under an image name is refused instead of blocking ``prepare`` forever."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise ReadError(path, f"cannot open ({exc.strerror or type(exc).__name__})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ReadError(path, "not a regular file (FIFO, socket or device); not read")
        if max_bytes is not None and info.st_size > max_bytes:
            raise ReadError(
                path,
                f"file of {info.st_size / 2**20:,.0f} MB is over the limit of {max_bytes / 2**20:,.0f} MB "
                "per image (raise it with --max-image-mb)",
            )
        head = os.read(fd, _HEADER_BYTES)
    except OSError as exc:
        raise ReadError(path, f"cannot read ({exc.strerror or type(exc).__name__})") from exc
    finally:
        os.close(fd)
    if not head:
        raise ReadError(path, "empty file")
    return head
