"""Volumes read by MONAI's own readers, plugged in as extra formats: NRRD (``NrrdReader``, needs
``pynrrd``) and MetaImage ``.mha`` / ``.mhd`` (``ITKReader``, needs ``itk``). Each is registered only when its
dependency is installed, and MONAI (which imports torch: seconds) is imported only when such a file is read.

MONAI returns the voxels with an affine to RAS+ (``affine_lps_to_ras=True``); the volume then goes through
the NIfTI path (:func:`ssl_radiology.io.nifti.volume_slices`), so an axial slice comes out exactly as the same
volume would from a NIfTI file or a DICOM series. These formats carry no modality: the caller's, else CT
(as for NIfTI). The memory bound is checked on the sizes in the text header before any voxel is read.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from ssl_radiology.io.formats import Format, register_format
from ssl_radiology.io.limits import check_decoded
from ssl_radiology.io.slice import ReadError, Slice

_SIZES = {
    "nrrd": re.compile(rb"^sizes:\s*([\d ]+)$", re.M),
    "metaimage": re.compile(rb"^DimSize\s*=\s*([\d ]+)$", re.M),
}
_HEADER_BYTES = 16384


def _reader(name: str, monai_reader: str) -> object:
    def read(path: Path, modality: str | None = None, max_bytes: int | None = None) -> list[Slice]:
        import monai.data
        import nibabel as nib

        from ssl_radiology.io.nifti import volume_slices

        with open(path, "rb") as fh:
            sizes = _SIZES[name].search(fh.read(_HEADER_BYTES))
        if sizes is None:
            raise ReadError(path, f"{name} header without image sizes")
        check_decoded(path, tuple(int(v) for v in sizes.group(1).split()), max_bytes)
        try:
            reader = getattr(monai.data, monai_reader)(affine_lps_to_ras=True)
            array, meta = reader.get_data(reader.read(str(path)))
        except Exception as exc:
            raise ReadError(path, f"cannot read {name} ({type(exc).__name__}: {exc})") from exc
        array, affine = np.asarray(array, dtype=np.float32), np.asarray(meta["affine"], dtype=np.float64)
        if array.ndim == 2:  # a 2-D image: one slice, its 3 × 3 affine embedded in 4 × 4
            array = array[..., None]
            affine = np.block([[affine[:2, :2], np.zeros((2, 1)), affine[:2, 2:]], [np.eye(4)[2:, :]]])
        return volume_slices(nib.Nifti1Image(array, affine), path, modality, max_bytes)

    return read


if importlib.util.find_spec("nrrd") is not None:
    register_format(
        Format(
            name="nrrd",
            suffixes=(".nrrd", ".nhdr"),
            sniff=lambda head, path: head.startswith(b"NRRD000"),
            read=_reader("nrrd", "NrrdReader"),
            priority=70,
        )
    )
if importlib.util.find_spec("itk") is not None:
    register_format(
        Format(
            name="metaimage",
            suffixes=(".mha", ".mhd"),
            sniff=lambda head, path: path.suffix.lower() in (".mha", ".mhd") and b"ObjectType" in head[:4096],
            read=_reader("metaimage", "ITKReader"),
            priority=70,
        )
    )
