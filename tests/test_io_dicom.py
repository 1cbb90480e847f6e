"""DICOM reading on pydicom's own test files (written by others) and on small series written here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from ssl_radiology.io import ReadError, read_slices
from ssl_radiology.io.dicom import age_band

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_SMALL = get_testdata_file("MR_small.dcm")
# A real MONOCHROME1 computed radiograph, 12-bit unsigned, Rescale Slope 0.684 / Intercept 200.
CR_MONO1 = str(Path(CT_SMALL).parent / "dicomdirtests" / "77654033" / "CR1" / "6154")
CT_SERIES = str(Path(CT_SMALL).parent / "dicomdirtests" / "77654033" / "CT2")


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _ct_file(path: Path, pixels: np.ndarray, *, position, orientation, instance: int, series: str) -> Path:
    """A CT slice from CT_small's real header with our pixels and geometry."""
    ds = pydicom.dcmread(CT_SMALL)
    ds.set_pixel_data(pixels.astype(np.int16), "MONOCHROME2", 16)
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.InstanceNumber = instance
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = generate_uid()
    return _write(ds, path)


def test_ct_is_hounsfield_via_modality_lut():
    ds = pydicom.dcmread(CT_SMALL)
    [ct] = read_slices(CT_SMALL)
    assert ds.PixelRepresentation == 1 and ds.pixel_array.dtype == np.int16  # signed storage
    expected = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    assert ct.pixels.dtype == np.float32 and ct.pixels.shape == (ds.Rows, ds.Columns)
    np.testing.assert_array_equal(ct.pixels, expected)
    assert ct.modality == "CT" and ct.index == 0 and ct.source == CT_SMALL
    assert ct.spacing == pytest.approx((0.661468, 0.661468))
    normal = np.cross(ds.ImageOrientationPatient[:3], ds.ImageOrientationPatient[3:])
    assert ct.position == pytest.approx(float(np.dot(ds.ImagePositionPatient, normal)))
    # Air sits near -1000 HU in a rescaled CT; raw stored values would not.
    assert ct.pixels.min() < -800


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_compressed_and_encoded_variants_match_uncompressed(name):
    [reference] = read_slices(MR_SMALL)
    [variant] = read_slices(get_testdata_file(name))
    np.testing.assert_array_equal(variant.pixels, reference.pixels)
    assert variant.modality == "MR"


def _mono_copy(tmp_path: Path, photometric: str, shape: str | None) -> Path:
    ds = pydicom.dcmread(CR_MONO1)
    ds.PhotometricInterpretation = photometric
    if shape is not None:
        ds.PresentationLUTShape = shape
    return _write(ds, tmp_path / f"{photometric}_{shape}.dcm")


def test_monochrome1_is_inverted_within_stored_range(tmp_path):
    ds = pydicom.dcmread(CR_MONO1)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.PixelRepresentation == 0
    rescaled = apply_modality_lut(ds.pixel_array, ds)
    low, high = 200.0, (2**ds.BitsStored - 1) * 0.684 + 200.0  # stored range 0..4095 through the LUT
    [xray] = read_slices(CR_MONO1)
    assert xray.modality == "CR" and xray.spacing == pytest.approx((0.1, 0.1))
    np.testing.assert_allclose(xray.pixels, low + high - rescaled, rtol=0, atol=1e-3)

    [plain] = read_slices(_mono_copy(tmp_path, "MONOCHROME2", None))
    np.testing.assert_allclose(plain.pixels, rescaled, atol=1e-3)
    [inverse] = read_slices(_mono_copy(tmp_path, "MONOCHROME2", "INVERSE"))
    np.testing.assert_array_equal(inverse.pixels, xray.pixels)
    # MONOCHROME1 + INVERSE describe one inversion (the DX/MG rule), so it is not undone by a second one.
    [both] = read_slices(_mono_copy(tmp_path, "MONOCHROME1", "INVERSE"))
    np.testing.assert_array_equal(both.pixels, xray.pixels)


def test_ct_is_never_inverted(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.PhotometricInterpretation = "MONOCHROME1"
    [ct] = read_slices(_write(ds, tmp_path / "ct_mono1.dcm"))
    np.testing.assert_array_equal(ct.pixels, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))


def test_multiframe_uses_per_frame_rescale_and_geometry(tmp_path):
    source = pydicom.dcmread(CT_SMALL)
    frames = np.stack([source.pixel_array + 10 * k for k in range(3)]).astype(np.int16)
    ds = pydicom.dcmread(CT_SMALL)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    ds.set_pixel_data(frames, "MONOCHROME2", 16)
    for keyword in ("RescaleSlope", "RescaleIntercept", "ImagePositionPatient", "PixelSpacing"):
        delattr(ds, keyword)
    shared = Dataset()
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing = [0.5, 0.25]
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k, z in enumerate([30.0, 10.0, 20.0]):
        item, position, transform = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, 0.0, z]
        transform.RescaleSlope, transform.RescaleIntercept = 2, -1000 - 100 * k
        item.PlanePositionSequence = Sequence([position])
        item.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)

    slices = read_slices(_write(ds, tmp_path / "enhanced.dcm"))
    assert [s.index for s in slices] == [0, 1, 2]
    assert [s.position for s in slices] == [30.0, 10.0, 20.0]  # stored frame order is kept
    for k, item in enumerate(slices):
        np.testing.assert_array_equal(item.pixels, frames[k].astype(np.float32) * 2 - 1000 - 100 * k)
        assert item.spacing == (0.5, 0.25) and item.modality == "CT"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("rtdose.dcm", "RT Dose"),
        ("rtstruct.dcm", "RT Structure Set"),
        ("rtplan.dcm", "RT Plan"),
        ("liver_1frame.dcm", "Segmentation"),
        ("test-SR.dcm", "SR"),
        ("waveform_ecg.dcm", "waveform"),
        ("SC_rgb_jpeg.dcm", "colour"),
        ("examples_palette.dcm", "PALETTE COLOR"),
        ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422"),
        ("MR_truncated.dcm", "less than expected"),
        ("dicomdirtests/DICOMDIR", "DICOMDIR"),
        ("JPEG-lossy.dcm", "failed to decode"),
    ],
)
def test_refused_files_name_path_and_reason(name, reason):
    path = str(Path(CT_SMALL).parent / name)
    with pytest.raises(ReadError) as caught:
        read_slices(path)
    assert caught.value.path == path and reason in caught.value.reason
    assert str(caught.value) == f"{path}: {caught.value.reason}"


def test_not_dicom_and_empty_files(tmp_path):
    empty = tmp_path / "empty.dcm"
    empty.touch()
    with pytest.raises(ReadError, match="empty file"):
        read_slices(empty)
    garbage = tmp_path / "IM0001"
    garbage.write_bytes(b"this is a note, not a scan\n" * 20)
    with pytest.raises(ReadError, match=r"IM0001: not a DICOM"):
        read_slices(garbage)
    ds = pydicom.dcmread(CT_SMALL)
    del ds.PixelData
    with pytest.raises(ReadError, match="not an image: no Pixel Data"):
        read_slices(_write(ds, tmp_path / "header_only.dcm"))


def test_file_without_extension_or_meta_reads_like_the_original(tmp_path):
    [reference] = read_slices(CT_SMALL)
    copied = Path(shutil.copy(CT_SMALL, tmp_path / "IM000001"))
    np.testing.assert_array_equal(read_slices(copied)[0].pixels, reference.pixels)
    ds = pydicom.dcmread(CT_SMALL)
    del ds.file_meta
    ds.preamble = None
    ds.save_as(tmp_path / "nometa", implicit_vr=True, little_endian=True, enforce_file_format=False)
    [bare] = read_slices(tmp_path / "nometa")
    np.testing.assert_array_equal(bare.pixels, reference.pixels)


def test_meta_less_compressed_pixel_data_is_refused(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    del ds.file_meta
    ds.save_as(tmp_path / "nometa_rle", implicit_vr=False, little_endian=True, enforce_file_format=False)
    with pytest.raises(ReadError, match="compressed: codec unknown"):
        read_slices(tmp_path / "nometa_rle")


def test_syntax_without_decoder_is_named(tmp_path, monkeypatch):
    ds = pydicom.dcmread(get_testdata_file("MR_small_RLE.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: pydicom has no decoder at all
    with pytest.raises(ReadError, match=r"no decoder exists in pydicom for transfer syntax MPEG2"):
        read_slices(_write(ds, tmp_path / "mpeg2.dcm"))
    # Pretend every JPEG-LS plugin is absent, as on an install without pyjpegls / pylibjpeg-libjpeg.
    from pydicom.pixels.decoders import JPEGLSLosslessDecoder

    monkeypatch.setattr(JPEGLSLosslessDecoder, "_available", {})
    with pytest.raises(
        ReadError, match=r"no decoder installed for transfer syntax JPEG-LS Lossless.*pyjpegls"
    ):
        read_slices(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))


@pytest.mark.parametrize(
    ("age", "band"),
    [("045Y", "40-49"), ("040Y", "40-49"), ("006M", "0-9"), ("003W", "0-9"), ("012D", "0-9"),
     ("130M", "10-19"), ("089Y", "80-89"), ("093Y", "90+"), ("", None), ("abcY", None), ("045", None)],
)  # fmt: skip
def test_age_band(age, band):
    assert age_band(age) == band


def test_attributes_are_non_identifying():
    [mr] = read_slices(MR_SMALL)
    ds = pydicom.dcmread(MR_SMALL)
    assert mr.attributes == {"sex": "F", "site": str(ds.ManufacturerModelName)}
    assert mr.patient_id == ds.PatientID and mr.study_uid == ds.StudyInstanceUID
    assert mr.series_uid == ds.SeriesInstanceUID
    [xray] = read_slices(CR_MONO1)
    assert xray.attributes["age_band"] == "40-49"
    identifiers = {xray.patient_id, xray.study_uid, xray.series_uid}
    assert not identifiers & set(xray.attributes.values())


def test_series_folder_orders_by_position_not_instance_number(tmp_path):
    rng = np.random.default_rng(0)
    series = generate_uid()
    zs = [5.0, -7.5, 12.0, 0.0, -2.5]
    for instance, z in enumerate(zs, start=1):
        _ct_file(
            tmp_path / f"IM{instance}",
            rng.integers(-1000, 1000, (8, 6)),
            position=(0, 0, z),
            orientation=(1, 0, 0, 0, 1, 0),
            instance=instance,
            series=series,
        )
    shutil.copy(Path(CT_SMALL).parent / "dicomdirtests" / "DICOMDIR", tmp_path / "DICOMDIR")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("no extension, not DICOM either")
    slices = read_slices(tmp_path)
    assert [s.position for s in slices] == sorted(zs)
    assert [s.index for s in slices] == list(range(5))
    assert [Path(s.source).name for s in slices] == ["IM2", "IM5", "IM4", "IM1", "IM3"]


def test_series_with_tilted_negative_normal(tmp_path):
    # Rows along -x and a gantry-tilted column direction: the normal points down and back, so the order
    # follows IPP · normal, which is the reverse of the z order here.
    tilt = np.deg2rad(20)
    row, column = np.array([-1.0, 0, 0]), np.array([0, np.cos(tilt), np.sin(tilt)])
    normal = np.cross(row, column)
    series = generate_uid()
    offsets = [3.0, 1.0, 2.0, 0.0]
    for instance, offset in enumerate(offsets, start=1):
        _ct_file(
            tmp_path / f"{instance}.dcm",
            np.full((4, 4), instance),
            position=np.array([10.0, -4.0, 50.0]) + offset * normal,
            orientation=(*row, *column),
            instance=instance,
            series=series,
        )
    slices = read_slices(tmp_path)
    base = float(np.dot([10.0, -4.0, 50.0], normal))
    assert [s.position - base for s in slices] == pytest.approx(sorted(offsets))
    assert [s.pixels[0, 0] + 1024 for s in slices] == [4, 2, 3, 1]  # CT_small's intercept is -1024


def test_series_falls_back_to_instance_number_without_geometry(tmp_path):
    series = generate_uid()
    for instance in (3, 1, 2):
        path = _ct_file(
            tmp_path / f"x{10 - instance}.dcm", np.full((4, 4), instance), position=(0, 0, -instance),
            orientation=(1, 0, 0, 0, 1, 0), instance=instance, series=series,
        )  # fmt: skip
        if instance == 2:
            ds = pydicom.dcmread(path)
            del ds.ImagePositionPatient
            _write(ds, path)
    assert [s.pixels[0, 0] + 1024 for s in read_slices(tmp_path)] == [1, 2, 3]


def test_real_series_and_mixed_series_folder(tmp_path):
    slices = read_slices(CT_SERIES)
    assert len(slices) == 4 and all(s.modality == "CT" for s in slices)
    assert [s.position for s in slices] == sorted(s.position for s in slices)
    _ct_file(tmp_path / "a.dcm", np.zeros((4, 4)), position=(0, 0, 0), orientation=(1, 0, 0, 0, 1, 0),
             instance=1, series=generate_uid())  # fmt: skip
    _ct_file(tmp_path / "b.dcm", np.zeros((4, 4)), position=(0, 0, 1), orientation=(1, 0, 0, 0, 1, 0),
             instance=2, series=generate_uid())  # fmt: skip
    with pytest.raises(ReadError, match="2 series"):
        read_slices(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReadError, match="no DICOM files"):
        read_slices(empty)
