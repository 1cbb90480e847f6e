"""NIfTI volumes (``.nii``, ``.nii.gz``) to axial slices in the same axis convention as an axial DICOM slice.

The volume is reoriented to RAS+ with ``nibabel.as_closest_canonical`` and scaled with scl_slope/scl_inter
by ``get_fdata``. RAS+ voxel ``[i, j, k]`` has ``i`` increasing towards the patient's right and ``j``
towards anterior, whereas an axial DICOM slice stored with Image Orientation (1,0,0,0,1,0) has rows running
anterior → posterior and columns patient-right → left. Slice ``k`` is therefore ``volume[::-1, ::-1, k].T``
(both in-plane axes reversed, then transposed to rows × columns); a test writes the same phantom slice as
DICOM and as NIfTI and checks they read back identically.

NIfTI has no modality field: slices are labelled with the caller's ``modality``, else ``"CT"`` because
volumes converted to NIfTI for pre-training corpora are overwhelmingly CT in Hounsfield units (pass
``modality="MR"`` etc. otherwise). A 4-D file with more than one volume is refused rather than silently
reduced to one volume.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from ssl_radiology.io.limits import check_decoded, check_shape
from ssl_radiology.io.slice import ReadError, Slice

DEFAULT_MODALITY = "CT"


def read_nifti(path: str | Path, modality: str | None = None, max_bytes: int | None = None) -> list[Slice]:
    """Axial slices of a NIfTI volume, inferior → superior; ``position`` is mm along the slice normal.

    ``max_bytes``: refuse, before reading voxels, a volume whose header shape exceeds it as float32.
    """
    try:
        image = nib.load(path)
    except Exception as exc:
        raise ReadError(path, f"cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    return volume_slices(image, path, modality, max_bytes)


def volume_slices(
    image: nib.spatialimages.SpatialImage, path: str | Path, modality: str | None, max_bytes: int | None
) -> list[Slice]:
    """Axial slices of any nibabel image with an affine (NIfTI, or a volume another reader turned into one)."""
    try:
        image = nib.as_closest_canonical(image)
    except Exception as exc:
        raise ReadError(path, f"cannot orient volume ({type(exc).__name__}: {exc})") from exc
    shape = image.shape
    if len(shape) > 3 and any(size > 1 for size in shape[3:]):
        raise ReadError(path, f"volume of shape {shape}: only 3-D volumes are read; split 4-D files first")
    check_decoded(path, tuple(shape), max_bytes)
    try:
        volume = image.get_fdata(dtype=np.float32)
    except Exception as exc:
        raise ReadError(path, f"cannot read voxels ({type(exc).__name__}: {exc})") from exc
    check_shape(path, volume.shape, shape)
    volume = volume.reshape(volume.shape[:3] if volume.ndim >= 3 else (*volume.shape, 1))
    affine = image.affine
    zooms = image.header.get_zooms()
    spacing = (float(zooms[1]), float(zooms[0]))
    axis = affine[:3, 2]
    normal = axis / np.linalg.norm(axis)
    columns, rows, depth = volume.shape
    slices = []
    for k in range(depth):
        # The first stored pixel, as in DICOM's Image Position (Patient), is voxel (columns-1, rows-1, k).
        first = affine @ np.array([columns - 1, rows - 1, k, 1.0])
        slices.append(
            Slice(
                pixels=np.ascontiguousarray(volume[::-1, ::-1, k].T),
                modality=modality or DEFAULT_MODALITY,
                spacing=spacing,
                source=str(path),
                index=k,
                position=float(np.dot(first[:3], normal)),
            )
        )
    return slices
