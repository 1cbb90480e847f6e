"""NIfTI reading: RAS+ reorientation, the axial axis convention shared with DICOM, scaling, refusals."""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from ssl_radiology.io import ReadError, read_slices

ROWS, COLUMNS, DEPTH = 6, 9, 4
ROW_MM, COLUMN_MM, SLICE_MM = 0.8, 0.6, 2.5
ORIGIN = np.array([-40.0, 25.0, 100.0])  # DICOM LPS position of the first pixel of the first slice


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    """An asymmetric integer CT volume (slices × rows × columns) so that any flip or transpose shows."""
    return np.random.default_rng(0).integers(-1000, 2000, (DEPTH, ROWS, COLUMNS)).astype(np.int16)


def _write_dicom_series(folder: Path, volume: np.ndarray) -> None:
    """The phantom as a standard axial CT series: rows along +y (posterior), columns along +x (left)."""
    series = generate_uid()
    for k, pixels in enumerate(volume):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.set_pixel_data(pixels, "MONOCHROME2", 16)
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [*ORIGIN[:2], ORIGIN[2] + k * SLICE_MM]
        ds.PixelSpacing = [ROW_MM, COLUMN_MM]
        ds.InstanceNumber, ds.SeriesInstanceUID, ds.SOPInstanceUID = DEPTH - k, series, generate_uid()
        ds.save_as(folder / f"slice{k}.dcm", enforce_file_format=True)


def _dicom_style_affine() -> np.ndarray:
    """The RAS affine a DICOM → NIfTI converter writes for voxel (column, row, slice): x and y flip sign."""
    return np.array(
        [
            [-COLUMN_MM, 0, 0, -ORIGIN[0]],
            [0, -ROW_MM, 0, -ORIGIN[1]],
            [0, 0, SLICE_MM, ORIGIN[2]],
            [0, 0, 0, 1],
        ]
    )


def test_nifti_slice_reads_identically_to_dicom(tmp_path, phantom):
    _write_dicom_series(tmp_path, phantom)
    dicom = read_slices(tmp_path)
    # voxel [i, j, k] = pixel [row j, column i] of slice k, as converters store it (not RAS: reoriented on read)
    as_stored = np.transpose(phantom, (2, 1, 0))
    nib.save(nib.Nifti1Image(as_stored, _dicom_style_affine()), tmp_path / "as_stored.nii.gz")
    # The same volume already in RAS+ but with slices stored superior → inferior (negative z step).
    ras = as_stored[::-1, ::-1, ::-1]
    affine = _dicom_style_affine() @ np.array(
        [[-1, 0, 0, COLUMNS - 1], [0, -1, 0, ROWS - 1], [0, 0, -1, DEPTH - 1], [0, 0, 0, 1]]
    )
    nib.save(nib.Nifti1Image(ras, affine), tmp_path / "flipped.nii")

    for name in ("as_stored.nii.gz", "flipped.nii"):
        nifti = read_slices(tmp_path / name)
        assert len(nifti) == len(dicom) == DEPTH
        for from_nifti, from_dicom in zip(nifti, dicom, strict=True):
            np.testing.assert_array_equal(from_nifti.pixels, from_dicom.pixels)
            assert from_nifti.pixels.dtype == np.float32
            assert from_nifti.position == pytest.approx(from_dicom.position)
            assert from_nifti.spacing == pytest.approx(from_dicom.spacing)
        assert [s.index for s in nifti] == list(range(DEPTH))
        assert nifti[0].modality == "CT"  # NIfTI has no modality: the documented default


def test_scaling_is_applied_and_modality_is_the_callers(tmp_path, phantom):
    stored = np.transpose(phantom, (2, 1, 0))
    image = nib.Nifti1Image(stored, _dicom_style_affine())
    image.header.set_slope_inter(0.5, -100.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    slices = read_slices(tmp_path / "scaled.nii.gz", modality="MR")
    expected = phantom[0].astype(np.float32) * 0.5 - 100.0
    np.testing.assert_allclose(slices[0].pixels, expected, rtol=0, atol=1e-4)
    assert slices[0].modality == "MR"


def test_nibabel_example_volume_is_read_in_ras():
    path = Path(data_path) / "anatomical.nii"
    canonical = nib.as_closest_canonical(nib.load(path))
    columns, rows, depth = canonical.shape[:3]
    slices = read_slices(path)
    assert len(slices) == depth and slices[0].pixels.shape == (rows, columns)
    positions = [s.position for s in slices]
    assert all(b > a for a, b in itertools.pairwise(positions))  # inferior → superior
    zooms = canonical.header.get_zooms()
    assert slices[0].spacing == pytest.approx((zooms[1], zooms[0]))


def test_four_d_and_broken_nifti_are_refused(tmp_path):
    four_d = Path(data_path) / "example4d.nii.gz"
    with pytest.raises(ReadError, match=r"example4d\.nii\.gz: volume of shape .*only 3-D"):
        read_slices(four_d)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(four_d.read_bytes()[:200])
    with pytest.raises(ReadError, match=r"broken\.nii\.gz: cannot read NIfTI"):
        read_slices(broken)
