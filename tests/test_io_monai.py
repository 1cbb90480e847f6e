"""One axis convention across sources: MONAI's readers return 2-D images transposed relative to ours.

MONAI is only a cross-check here (it is 8-17x slower per file and not used by ``ssl_radiology.io``): its
``PydicomReader`` and ``PILReader`` give ``(columns, rows)`` arrays, i.e. ``ours.T``, with the same values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from ssl_radiology.io import read_slices


def _monai(path, reader: str) -> np.ndarray:
    return np.squeeze(np.asarray(LoadImage(reader=reader, image_only=True)(str(path))))


def test_dicom_matches_pydicom_and_monai_transposed():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    [ours] = read_slices(path)
    np.testing.assert_array_equal(ours.pixels, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    theirs = _monai(path, "PydicomReader")
    assert theirs.shape == (ds.Columns, ds.Rows)
    np.testing.assert_array_equal(theirs.T, ours.pixels)


def test_png_matches_monai_pil_reader_transposed(tmp_path):
    pixels = (np.arange(12 * 30).reshape(12, 30) * 181 % 65536).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    [ours] = read_slices(tmp_path / "x.png")
    theirs = _monai(tmp_path / "x.png", "PILReader")
    assert theirs.shape == (30, 12)
    np.testing.assert_array_equal(theirs.T, ours.pixels)


# --- our readers behind MONAI's ImageReader protocol (ssl_radiology.io.monai_reader + the format registry)
CR_MONO1 = str(Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "77654033" / "CR1" / "6154")


def test_load_image_with_our_dicom_reader_gives_our_hu_pixels():
    from monai.data import ImageReader, MetaTensor

    from ssl_radiology.io.monai_reader import SliceReader

    reader = SliceReader("dicom")
    assert (
        isinstance(reader, ImageReader) and reader.verify_suffix("a/b.dcm") and reader.verify_suffix("IM0001")
    )
    assert not reader.verify_suffix("x.png")
    path = get_testdata_file("CT_small.dcm")
    image = LoadImage(reader=reader, image_only=True)(path)
    [ours] = read_slices(path)
    assert isinstance(image, MetaTensor) and image.shape == (128, 128)
    np.testing.assert_array_equal(image.numpy().T, ours.pixels)  # HU, bit for bit, MONAI's axis order
    assert float(image.min()) < -800 and image.meta["modality"] == "CT"
    np.testing.assert_allclose(image.meta["spacing"], ours.spacing[::-1])
    # MONOCHROME1: MONAI's own reader returns stored polarity, ours higher = brighter
    ds = pydicom.dcmread(CR_MONO1)
    ours_cr = LoadImage(reader=SliceReader(), image_only=True)(CR_MONO1).numpy().T
    theirs_cr = _monai(CR_MONO1, "PydicomReader").T
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(ours_cr, read_slices(CR_MONO1)[0].pixels)
    assert np.corrcoef(ours_cr.ravel(), theirs_cr.ravel())[0, 1] < -0.99


def test_monai_nrrd_reader_plugs_in_as_a_format_and_matches_nifti(tmp_path):
    import nibabel as nib
    import nrrd

    from ssl_radiology.io.formats import get_format
    from ssl_radiology.io.monai_reader import SliceReader

    volume = np.random.default_rng(0).integers(-1000, 1000, size=(12, 10, 4)).astype(np.int16)
    spacing = (0.8, 0.7, 2.5)
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag(spacing),
        "space origin": [0, 0, 0],
    }
    nrrd.write(str(tmp_path / "vol.nrrd"), volume, header)
    # the same voxels as NIfTI: LPS (NRRD) → RAS (NIfTI) flips the first two axes of the affine
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "vol.nii.gz")
    assert get_format("nrrd").name == "nrrd"
    from_nrrd = read_slices(tmp_path / "vol.nrrd", modality="CT")
    from_nifti = read_slices(tmp_path / "vol.nii.gz")
    assert len(from_nrrd) == 4
    for a, b in zip(from_nrrd, from_nifti, strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert a.spacing == pytest.approx(b.spacing) and a.position == pytest.approx(b.position)
    stacked = LoadImage(reader=SliceReader("nrrd"), image_only=True)(tmp_path / "vol.nrrd")
    assert stacked.shape == (12, 10, 4) and np.array_equal(stacked.numpy()[..., 0].T, from_nrrd[0].pixels)


def test_load_image_reads_a_dicom_series_folder_as_a_volume(tmp_path):
    from test_prepare_support import write_ct_series

    from ssl_radiology.io.monai_reader import SliceReader

    series = pydicom.uid.generate_uid()
    for path in write_ct_series(tmp_path / "series", 3):  # one Series Instance UID for the three files
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series
        ds.save_as(path)
    volume = LoadImage(reader=SliceReader("dicom"), image_only=True)(tmp_path / "series")
    ours = read_slices(tmp_path / "series")
    assert volume.shape == (48, 64, 3)  # (x = columns, y = rows, slice), as MONAI's readers order axes
    for k, item in enumerate(ours):
        np.testing.assert_array_equal(volume.numpy()[..., k].T, item.pixels)
    np.testing.assert_allclose(volume.meta["spacing"], [0.7, 0.7, 1.0])
