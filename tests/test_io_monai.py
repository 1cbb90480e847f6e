"""One axis convention across sources: MONAI's readers return 2-D images transposed relative to ours.

MONAI is only a cross-check here (it is 8-17x slower per file and not used by ``ssl_radiology.io``): its
``PydicomReader`` and ``PILReader`` give ``(columns, rows)`` arrays, i.e. ``ours.T``, with the same values.
"""

from __future__ import annotations

import numpy as np
import pydicom
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
