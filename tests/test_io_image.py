"""PNG/JPEG/TIFF reading and the format dispatch of ``read_slices``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from ssl_radiology.io import ReadError, read_slices


@pytest.fixture(scope="module")
def gradient16() -> np.ndarray:
    """A non-square 16-bit image using values above 255, so 8-bit truncation or a transpose would show."""
    return (np.arange(20 * 33, dtype=np.uint32).reshape(20, 33) * 97 % 65536).astype(np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_values_are_kept(tmp_path, gradient16, suffix):
    path = tmp_path / f"image{suffix}"
    Image.fromarray(gradient16).save(path)
    [item] = read_slices(path)
    assert item.pixels.dtype == np.float32 and item.pixels.shape == (20, 33)
    np.testing.assert_array_equal(item.pixels, gradient16.astype(np.float32))
    assert item.modality == "OT" and item.spacing is None and item.position is None
    assert read_slices(path, modality="DX")[0].modality == "DX"


def test_eight_bit_png_and_grayscale_jpeg(tmp_path):
    pixels = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))
    Image.fromarray(pixels).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_slices(tmp_path / "g.png")[0].pixels, pixels)
    Image.fromarray(pixels).save(tmp_path / "g.jpg", quality=95)
    jpeg = read_slices(tmp_path / "g.jpg")[0].pixels
    assert jpeg.shape == pixels.shape
    assert np.abs(jpeg - pixels).max() <= 8  # lossy, but the same image


def test_colour_is_converted_with_bt601_luma(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    Image.fromarray(np.dstack([rgb, np.full((10, 14), 128, np.uint8)])).save(tmp_path / "alpha.png")
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    for name in ("photo.png", "alpha.png"):
        [item] = read_slices(tmp_path / name)
        assert item.pixels.shape == (10, 14)
        assert np.abs(item.pixels - luma).max() <= 1.0  # Pillow rounds to 8 bits


def test_multipage_tiff_gives_one_slice_per_page(tmp_path, gradient16):
    pages = [Image.fromarray(gradient16), Image.fromarray(gradient16[::-1].copy())]
    pages[0].save(tmp_path / "stack.tiff", save_all=True, append_images=pages[1:])
    slices = read_slices(tmp_path / "stack.tiff")
    assert [s.index for s in slices] == [0, 1]
    np.testing.assert_array_equal(slices[1].pixels, gradient16[::-1])


def test_truncated_and_fake_images_are_refused(tmp_path, gradient16):
    Image.fromarray(gradient16).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReadError, match=r"cut\.png: cannot read image"):
        read_slices(tmp_path / "cut.png")
    (tmp_path / "fake.png").write_text("not a picture")
    with pytest.raises(ReadError, match=r"fake\.png: not a DICOM, NIfTI, PNG, JPEG or TIFF file"):
        read_slices(tmp_path / "fake.png")


def test_dispatch_is_by_content_not_name(tmp_path, gradient16):
    Image.fromarray(gradient16).save(tmp_path / "really_a_png.dcm", format="PNG")
    np.testing.assert_array_equal(read_slices(tmp_path / "really_a_png.dcm")[0].pixels, gradient16)
    dicom = shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "scan.png")
    assert read_slices(dicom)[0].modality == "CT"
    with pytest.raises(ReadError, match=r"gzip-compressed file that is not a \.nii\.gz"):
        read_slices(get_testdata_file("zipMR.gz"))
    with pytest.raises(ReadError, match=r"missing\.dcm: cannot open"):
        read_slices(tmp_path / "missing.dcm")
