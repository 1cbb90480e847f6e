"""The fast paths of ingest: native DICOM pixels without ``pixel_array`` and the sparse antialiased resize.

Each fast path is checked against the general implementation it replaces: pydicom's decoders +
``apply_modality_lut`` (bit-identical values required) and torch's ``interpolate(antialias=True)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from ssl_radiology.data.phantom_dicom import CT_STORAGE, CTGeometry, Identity, write_ct_series
from ssl_radiology.data.pixels import fit_to_square, resize_weights, to_stored
from ssl_radiology.io import read_slices
from ssl_radiology.io.dicom import read_dataset
from ssl_radiology.io.dicom_pixels import FrameGroups, declared_shape, lut_frames, native_pixels

CT_SMALL = get_testdata_file("CT_small.dcm")
# A real MONOCHROME1 computed radiograph, 12-bit unsigned, Rescale Slope 0.684 / Intercept 200.
CR_MONO1 = str(Path(CT_SMALL).parent / "dicomdirtests" / "77654033" / "CR1" / "6154")


def _general(ds: Dataset, invert: bool) -> np.ndarray:
    """The general path (pydicom decoders + apply_modality_lut), which the fast path must reproduce."""
    [pixels] = lut_frames(ds, "test.dcm", FrameGroups(ds), invert, declared_shape(ds, "test.dcm"))
    return pixels


def _assert_identical(path: str | Path, invert: bool = False) -> np.ndarray:
    ds = read_dataset(path)
    fast = native_pixels(ds, invert)
    assert fast is not None, "expected the native fast path to apply"
    reference = _general(ds, invert)
    assert fast.dtype == np.float32 and fast.shape == reference.shape
    np.testing.assert_array_equal(fast.view(np.uint32), reference.view(np.uint32))  # bit for bit
    return fast


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_ct_small_is_bit_identical():
    fast = _assert_identical(CT_SMALL)
    ds = pydicom.dcmread(CT_SMALL)
    np.testing.assert_array_equal(fast, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    [ct] = read_slices(CT_SMALL)
    np.testing.assert_array_equal(ct.pixels, fast)


@pytest.mark.parametrize("storage", sorted(CT_STORAGE))
def test_phantom_storage_variants_are_bit_identical(tmp_path, storage):
    rng = np.random.default_rng(0)
    volume = rng.integers(-1024, 3072, size=(2, 24, 20)).astype(np.float64)
    ident = Identity("DOE^J", "P1", "19700101", "F", "054Y", "20200101", "ACME", "CT-1", "H", ("fast",))
    geometry = CTGeometry(origin=(0.0, 0.0, 0.0), row_spacing=0.8, col_spacing=0.7, thickness=2.0)
    paths = write_ct_series(volume, geometry, ident, tmp_path / storage, storage=storage)
    for k, path in enumerate(paths):
        fast = _assert_identical(path)
        np.testing.assert_array_equal(fast, volume[k].astype(np.float32))  # the HU that were written


@pytest.mark.parametrize(("signed", "bits"), [(1, 12), (0, 12), (1, 10), (0, 8)])
def test_unused_high_bits_are_dropped_like_pydicom(tmp_path, signed, bits):
    """Garbage in the bits above Bits Stored: pydicom masks (unsigned) or sign-extends (signed) them."""
    rng = np.random.default_rng(bits + signed)
    allocated = 8 if bits == 8 else 16
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    raw = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=(16, 12), endpoint=True).astype(dtype)
    ds = pydicom.dcmread(CT_SMALL)
    ds.set_pixel_data(raw, "MONOCHROME2", allocated)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, signed
    ds.PixelData = raw.tobytes()  # set_pixel_data checks the range: put the garbage bits back
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    fast = _assert_identical(_save(ds, tmp_path / "bits.dcm"))
    stored = (fast + 1024) / 2
    assert stored.min() >= (-(2 ** (bits - 1)) if signed else 0)
    assert stored.max() <= (2 ** (bits - 1) - 1 if signed else 2**bits - 1)


def test_non_integer_rescale_and_monochrome1_follow_the_float64_path():
    ds = read_dataset(CR_MONO1)
    assert float(ds.RescaleSlope) == pytest.approx(0.684)  # not exact in float32: the float64 branch
    _assert_identical(CR_MONO1, invert=True)
    _assert_identical(CR_MONO1, invert=False)


def test_missing_or_negative_rescale_and_implicit_syntax(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    del ds.RescaleSlope
    _assert_identical(_save(ds, tmp_path / "no_slope.dcm"))  # only one of the two: no rescale
    ds = pydicom.dcmread(CT_SMALL)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    _assert_identical(_save(ds, tmp_path / "implicit.dcm"))
    ds = pydicom.dcmread(CT_SMALL)
    ds.RescaleSlope, ds.RescaleIntercept = -1, 0  # 0 * -1 is -0.0: must come out as the float64 path's 0.0
    pixels = ds.pixel_array.copy()
    pixels[:4] = 0
    ds.PixelData = pixels.tobytes()
    assert not np.signbit(_assert_identical(_save(ds, tmp_path / "negative.dcm"))[:4]).any()


def _modality_lut(ds: Dataset) -> None:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "HU"
    item.LUTData = list(range(4096))
    ds.ModalityLUTSequence = Sequence([item])


def _multiframe(ds: Dataset) -> None:
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2


@pytest.mark.parametrize(
    "change",
    [
        lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", ExplicitVRBigEndian),
        _modality_lut,
        _multiframe,
        lambda ds: setattr(ds, "PixelData", ds.PixelData[:-2]),  # truncated: pydicom must report it
        lambda ds: setattr(ds, "RescaleSlope", None),  # empty value: the general path reports it
    ],
    ids=["big-endian", "modality-lut", "multi-frame", "truncated", "empty-slope"],
)
def test_unusual_files_take_the_general_path(change):
    ds = pydicom.dcmread(CT_SMALL)
    change(ds)
    assert native_pixels(ds, invert=False) is None


def test_compressed_file_takes_the_general_path():
    ds = read_dataset(get_testdata_file("MR_small_RLE.dcm"))
    assert native_pixels(ds, invert=False) is None
    [reference] = read_slices(get_testdata_file("MR_small.dcm"))
    [rle] = read_slices(get_testdata_file("MR_small_RLE.dcm"))
    np.testing.assert_array_equal(rle.pixels, reference.pixels)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((512, 512), 256), ((512, 512), 224), ((300, 500), 256), ((64, 64), 128), ((37, 91), 64), ((50, 40), 7)],
)
def test_resize_matches_torch_antialiased_bilinear(shape, size):
    rng = np.random.default_rng(1)
    image = rng.integers(-1024, 3072, size=shape).astype(np.float32)
    resized, row_scale, col_scale = fit_to_square(image, size)
    reference = F.interpolate(
        torch.from_numpy(image)[None, None], size=resized.shape, mode="bilinear", antialias=True
    )[0, 0].numpy()
    assert max(resized.shape) == size
    assert row_scale == pytest.approx(resized.shape[0] / shape[0])
    assert col_scale == pytest.approx(resized.shape[1] / shape[1])
    # torch computes its weights in float32: the two agree to ~1e-5 of the value range (4096 here)
    np.testing.assert_allclose(resized, reference, rtol=0, atol=0.05)


def test_resize_by_two_is_exact_inside_and_keeps_constants():
    """Halving uses weights 1/8, 3/8, 3/8, 1/8: exact on integers away from the border."""
    rng = np.random.default_rng(2)
    image = rng.integers(-1024, 3072, size=(64, 64)).astype(np.float32)
    resized, _, _ = fit_to_square(image, 32)
    expected = F.interpolate(
        torch.from_numpy(image)[None, None], size=(32, 32), mode="bilinear", antialias=True
    )
    np.testing.assert_array_equal(resized[1:-1, 1:-1], expected[0, 0, 1:-1, 1:-1].numpy())
    weights = resize_weights(64, 32).toarray()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(weights[5, 9:13], [0.125, 0.375, 0.375, 0.125])
    flat, _, _ = fit_to_square(np.full((50, 30), 40.0, dtype=np.float32), 20)
    np.testing.assert_allclose(flat, 40.0, rtol=1e-6)


def test_to_stored_leaves_its_input_alone_and_rejects_non_finite():
    image = np.linspace(-2000, 4000, 32 * 32, dtype=np.float32).reshape(32, 32)
    before = image.copy()
    stored, _, _ = to_stored(image, "CT", 32)  # no resize: the clip must not write into the caller's array
    np.testing.assert_array_equal(image, before)
    assert stored.dtype == np.int16 and stored.min() == -1024 and stored.max() == 3071
    image[5, 7] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        to_stored(image, "CT", 16)
    image[5, 7] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        to_stored(image, "MR", 64)
