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
- **Privacy**: raw patient/study/series identifiers only travel in the ``Slice`` fields for hashing;
  ``attributes`` holds sex, 10-year age band (90+ pooled) and scanner model only.
"""

from __future__ import annotations

from pathlib import Path

from ssl_radiology.io.dicom import read_dicom, read_dicom_series
from ssl_radiology.io.discover import find_sources
from ssl_radiology.io.image import read_image
from ssl_radiology.io.nifti import read_nifti
from ssl_radiology.io.slice import ReadError, Slice

__all__ = ["ReadError", "Slice", "find_sources", "read_slices"]

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")
_NIFTI_MAGIC = (b"n+1\x00", b"ni1\x00")
_HEADER_BYTES = 348  # a NIfTI-1 header; also covers DICOM's 128-byte preamble + "DICM"


def read_slices(path: str | Path, modality: str | None = None) -> list[Slice]:
    """Slices of a DICOM file or series folder, a NIfTI volume, or a PNG/JPEG/TIFF image.

    The format is decided from the first bytes (DICM prefix, PNG/JPEG/TIFF/NIfTI magic), the name only for
    gzip-compressed NIfTI, and a forced DICOM parse for everything else (DICOM without preamble).
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, modality)
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEADER_BYTES)
    except OSError as exc:
        raise ReadError(path, f"cannot open ({exc.strerror or exc})") from exc
    if not head:
        raise ReadError(path, "empty file")
    if head[128:132] == b"DICM":
        return read_dicom(path, modality)
    if head.startswith(_IMAGE_MAGIC):
        return read_image(path, modality)
    if head[344:348] in _NIFTI_MAGIC or head[4:8] == b"n+2\x00":
        return read_nifti(path, modality)
    if head.startswith(b"\x1f\x8b"):
        if path.name.lower().endswith(".nii.gz"):
            return read_nifti(path, modality)
        raise ReadError(path, "gzip-compressed file that is not a .nii.gz NIfTI volume")
    return read_dicom(path, modality)
