"""DICOM files and series folders to :class:`Slice` lists, with pydicom only (no MONAI in this hot path).

Pixel values (decoding itself is :mod:`ssl_radiology.io.dicom_pixels`):

- the modality LUT makes CT Hounsfield units (per frame for enhanced multi-frame files); plain
  uncompressed files take a bit-exact fast path (:func:`~ssl_radiology.io.dicom_pixels.native_pixels`).
- no VOI LUT / window is applied: windowing happens late, in the training transforms.
- every modality except the quantitative ones (CT, PT) is made "higher = brighter": MONOCHROME1, or a
  Presentation LUT Shape of INVERSE, is inverted within the range that the *stored* values can take after
  the modality LUT (``lo + hi - value``), not the range found in the image, so that the inversion of a file
  does not depend on its content (float pixel data has no stored range: its own min–max is used). MONOCHROME1 together with INVERSE is inverted once, not twice: the DX
  and MG IODs require INVERSE exactly when the image is MONOCHROME1, so both describe the same inversion.

Refused with a :class:`ReadError`: colour images (Samples per Pixel > 1, RGB/YBR/PALETTE COLOR), objects
that are not images to pre-train on (Segmentation, RT Structure Set/Dose/Plan/..., presentation states,
structured reports, waveforms, encapsulated documents, DICOMDIR), files without pixel data, truncated pixel
data and transfer syntaxes without an installed decoder (the reason names the syntax and the plugin).

A file without file meta (no transfer syntax) is decoded with the encoding pydicom found while parsing
it when its pixel data is native; if the pixel data is encapsulated the codec cannot be known and the file
is refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ssl_radiology.io.dicom_pixels import FrameGroups, declared_shape, lut_frames, native_pixels
from ssl_radiology.io.dicom_tags import has, value_of
from ssl_radiology.io.discover import is_candidate
from ssl_radiology.io.limits import check_decoded
from ssl_radiology.io.slice import ReadError, Slice

#: Modalities whose values are physical quantities: never inverted for display polarity.
QUANTITATIVE_MODALITIES = frozenset({"CT", "PT"})

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GRAYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2"})
_RT_IMAGE = "1.2.840.10008.5.1.4.1.1.481.1"
# SOP class UID prefixes of objects that are not images to pre-train on (RT Image, a projection radiograph,
# is the one RT class that is kept).
_REFUSED_SOP_PREFIXES = {
    "1.2.840.10008.1.3.10": "a DICOMDIR (a media index, not an image)",
    "1.2.840.10008.5.1.4.1.1.66": "a segmentation, registration or raw-data object",
    "1.2.840.10008.5.1.4.1.1.481.": "an RT object (structure set, dose, plan, ...)",
    "1.2.840.10008.5.1.4.1.1.11.": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.88.": "a structured report",
    "1.2.840.10008.5.1.4.1.1.9.": "a waveform",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document",
}
_REFUSED_MODALITIES = frozenset({"SEG", "REG", "RTSTRUCT", "RTDOSE", "RTPLAN", "RTRECORD", "SR", "PR", "KO"})
# (implicit VR, little endian) as parsed -> the uncompressed transfer syntax that reads that way.
_SYNTAX_BY_ENCODING = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}


class NotDicomError(ReadError):
    """The bytes are not DICOM at all (as opposed to a DICOM file that is broken or refused).

    A series folder skips such files (notes, stray exports) but fails on a broken DICOM file.
    """


def read_dataset(path: str | Path) -> Dataset:
    """Parse a DICOM file, with or without ``.dcm`` and with or without the 128-byte preamble + ``DICM``.

    ``force=True`` is only tried when the strict parse fails, because forced parsing of non-DICOM bytes
    "succeeds" with junk; such a result is recognised by the absence of any image-defining element.
    """
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        pass
    except Exception as exc:
        raise ReadError(path, f"cannot parse DICOM ({type(exc).__name__}: {exc})") from exc
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise NotDicomError(path, "not a DICOM, NIfTI, PNG, JPEG or TIFF file") from exc
    if not any(has(ds, keyword) for keyword in ("SOPClassUID", "Modality", *_PIXEL_KEYWORDS)):
        raise NotDicomError(path, "not a DICOM, NIfTI, PNG, JPEG or TIFF file")
    return ds


def read_dicom(path: str | Path, modality: str | None = None, max_bytes: int | None = None) -> list[Slice]:
    """All frames of one DICOM file as slices, in stored frame order (``index`` = frame number).

    ``max_bytes``: refuse, before decoding, a file whose frames would exceed it as float32 (:mod:`.limits`).
    """
    slices = slices_from_dataset(read_dataset(path), path, modality, max_bytes)
    for index, item in enumerate(slices):
        item.index = index
    return slices


def read_dicom_series(
    folder: str | Path, modality: str | None = None, max_bytes: int | None = None
) -> list[Slice]:
    """Every DICOM file directly in ``folder`` (one series), ordered along the slice normal.

    Order is by ``ImagePositionPatient · (row cosine × column cosine)``, which is what the slices' physical
    order is; Instance Number is only a fallback for when any slice lacks that geometry, because scanners
    and anonymisers renumber instances freely.
    """
    folder = Path(folder)
    entries: list[tuple[int | None, Slice]] = []
    series: set[str | None] = set()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and is_candidate(p)):
        try:
            ds = read_dataset(path)
        except NotDicomError:
            continue
        series.add(_text(ds, "SeriesInstanceUID"))
        number = _instance_number(ds)
        entries.extend((number, item) for item in slices_from_dataset(ds, path, modality, max_bytes))
    if not entries:
        raise ReadError(folder, "folder holds no DICOM files")
    if len(series) > 1:
        raise ReadError(folder, f"folder holds {len(series)} series; read each series folder separately")
    if all(item.position is not None for _, item in entries):
        entries.sort(key=lambda entry: entry[1].position)
    else:
        entries.sort(key=lambda entry: math.inf if entry[0] is None else entry[0])
    slices = [item for _, item in entries]
    for index, item in enumerate(slices):
        item.index = index
    return slices


def slices_from_dataset(
    ds: Dataset, path: str | Path, modality: str | None = None, max_bytes: int | None = None
) -> list[Slice]:
    """Decode a parsed dataset into slices (``index`` left as the frame number).

    Any failure, including a malformed header value met on the way, is a :class:`ReadError` naming the file.
    """
    try:
        return _slices(ds, path, modality, max_bytes)
    except ReadError:
        raise
    except Exception as exc:
        raise ReadError(path, f"malformed DICOM ({type(exc).__name__}: {exc})") from exc


def _slices(ds: Dataset, path: str | Path, modality: str | None, max_bytes: int | None) -> list[Slice]:
    _refuse_non_images(ds, path)
    _ensure_transfer_syntax(ds, path)
    declared = declared_shape(ds, path)
    check_decoded(path, declared, max_bytes)
    file_modality = _text(ds, "Modality") or modality or "OT"
    attributes = patient_attributes(ds)
    identifiers = {
        "patient_id": _text(ds, "PatientID"),
        "study_uid": _text(ds, "StudyInstanceUID"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
    }
    invert = file_modality not in QUANTITATIVE_MODALITIES and (
        value_of(ds, "PhotometricInterpretation") == "MONOCHROME1"
        or value_of(ds, "PresentationLUTShape") == "INVERSE"
    )
    groups = FrameGroups(ds)
    native = native_pixels(ds, invert) if groups.empty else None
    images = [native] if native is not None else lut_frames(ds, path, groups, invert, declared)
    slices = []
    for number, pixels in enumerate(images):
        slices.append(
            Slice(
                pixels=pixels,
                modality=file_modality,
                spacing=_spacing(ds, groups, number),
                source=str(path),
                index=number,
                position=_position(ds, groups, number),
                attributes=dict(attributes),
                **identifiers,
            )
        )
    return slices


def patient_attributes(ds: Dataset) -> dict[str, str]:
    """Non-identifying attributes for sub-group analysis: sex, 10-year age band, scanner model.

    Ages of 90 and over are pooled into ``"90+"`` (the HIPAA Safe Harbor rule: exact high ages identify).
    """
    attributes: dict[str, str] = {}
    sex = _text(ds, "PatientSex")
    if sex in ("M", "F", "O"):
        attributes["sex"] = sex
    band = age_band(_text(ds, "PatientAge"))
    if band is not None:
        attributes["age_band"] = band
    site = _text(ds, "ManufacturerModelName") or _text(ds, "Manufacturer")
    if site:
        attributes["site"] = site
    return attributes


def age_band(age: str | None) -> str | None:
    """DICOM Age String (``"045Y"``, ``"018M"``, ``"003W"``, ``"012D"``) to a decade band such as ``"40-49"``."""
    if not age or len(age) < 2 or not age[:-1].strip().isdigit():
        return None
    days_per_unit = {"Y": 365.25, "M": 365.25 / 12, "W": 7.0, "D": 1.0}.get(age[-1].upper())
    if days_per_unit is None:
        return None
    years = int(age[:-1]) * days_per_unit / 365.25
    if years >= 90:
        return "90+"
    decade = int(years // 10) * 10
    return f"{decade}-{decade + 9}"


def _instance_number(ds: Dataset) -> int | None:
    """Instance Number, or None when absent or malformed (it only breaks ties when geometry is missing)."""
    try:
        return int(ds.InstanceNumber)
    except (AttributeError, TypeError, ValueError):
        return None


def _text(ds: Dataset, keyword: str) -> str | None:
    value = value_of(ds, keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _refuse_non_images(ds: Dataset, path: str | Path) -> None:
    file_meta = getattr(ds, "file_meta", None)
    sop = str(
        value_of(ds, "SOPClassUID")
        or (value_of(file_meta, "MediaStorageSOPClassUID") if file_meta else "")
        or ""
    )
    for prefix, what in _REFUSED_SOP_PREFIXES.items():
        if sop.startswith(prefix) and sop != _RT_IMAGE:
            raise ReadError(path, f"{what} ({UID(sop).name}), not an image to pre-train on")
    modality = _text(ds, "Modality")
    if modality in _REFUSED_MODALITIES:
        raise ReadError(path, f"Modality {modality} is not an image to pre-train on")
    if not any(has(ds, keyword) for keyword in _PIXEL_KEYWORDS):
        raise ReadError(path, "not an image: no Pixel Data element")
    samples = int(value_of(ds, "SamplesPerPixel") or 1)
    photometric = str(value_of(ds, "PhotometricInterpretation") or "MONOCHROME2")
    if samples > 1 or photometric not in _GRAYSCALE:
        raise ReadError(
            path,
            f"colour image (Photometric Interpretation {photometric}, {samples} samples per pixel); "
            "only grayscale DICOM is read",
        )


def _ensure_transfer_syntax(ds: Dataset, path: str | Path) -> None:
    """Give a meta-less file the transfer syntax it was parsed with, when that is enough to decode it."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and value_of(file_meta, "TransferSyntaxUID"):
        return
    if any(ds[keyword].is_undefined_length for keyword in _PIXEL_KEYWORDS if keyword in ds):
        raise ReadError(
            path, "no Transfer Syntax UID (file meta missing) and the pixel data is compressed: codec unknown"
        )
    syntax = _SYNTAX_BY_ENCODING.get(tuple(ds.original_encoding))
    if syntax is None:
        raise ReadError(path, "no Transfer Syntax UID (file meta missing) and the encoding is unknown")
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = syntax


def _spacing(ds: Dataset, groups: FrameGroups, frame: int) -> tuple[float, float] | None:
    """(row mm, column mm) from Pixel Spacing, else Imager Pixel Spacing (projection radiographs)."""
    measures = groups.item(frame, "PixelMeasuresSequence")
    for source in (measures, ds):
        if source is None:
            continue
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = value_of(source, keyword)
            if value is not None and len(value) == 2:
                return float(value[0]), float(value[1])
    return None


def _position(ds: Dataset, groups: FrameGroups, frame: int) -> float | None:
    """Millimetres along the slice normal: ``ImagePositionPatient · (row cosine × column cosine)``."""
    plane = groups.item(frame, "PlanePositionSequence")
    orientation = groups.item(frame, "PlaneOrientationSequence")
    position = value_of(plane or ds, "ImagePositionPatient")
    cosines = value_of(orientation or ds, "ImageOrientationPatient")
    if position is None or cosines is None or len(position) != 3 or len(cosines) != 6:
        return None
    # Plain float arithmetic: numpy's cross/dot on 3-vectors cost ~0.1 ms a slice in small-array overhead.
    rx, ry, rz, cx, cy, cz = (float(v) for v in cosines)
    normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)
    if math.hypot(*normal) < 1e-6:  # degenerate orientation: no usable normal
        return None
    px, py, pz = (float(v) for v in position)
    return px * normal[0] + py * normal[1] + pz * normal[2]
