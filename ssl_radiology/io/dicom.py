"""DICOM files and series folders to :class:`Slice` lists, with pydicom only (no MONAI in this hot path).

Pixel values:

- the modality LUT is applied with ``pydicom.pixels.apply_modality_lut`` (Rescale Slope/Intercept or a
  Modality LUT Sequence), so CT comes out in Hounsfield units; Bits Stored and Pixel Representation are
  honoured by pydicom's decoders. Multi-frame files take the rescale of each frame from the Per-frame (else
  Shared) Functional Groups' Pixel Value Transformation Sequence, which ``apply_modality_lut`` ignores.
- plain uncompressed (little-endian, single-frame, 8/16-bit) files skip ``pixel_array``:
  :func:`native_pixels` views the Pixel Data bytes and rescales them with values bit-identical to the
  general path (a 512² CT slice reads ~2.5× faster; see its docstring and docs/benchmarks.md).
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
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ssl_radiology.io.discover import is_candidate
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
# Uncompressed little-endian syntaxes whose Pixel Data native_pixels() views directly (big endian is retired
# and byte-swaps 8-bit OW data, so it stays with pydicom).
_NATIVE_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian})
# Elements that need pydicom's general decoding: float pixel data, a LUT, enhanced multi-frame groups.
_NOT_NATIVE_KEYWORDS = ("FloatPixelData", "DoubleFloatPixelData", "ModalityLUTSequence")
# Integers of magnitude below 2**24 are exact in float32, and so is their float32 sum/product when it is too.
_EXACT_FLOAT32 = 2**24
# Which pylibjpeg / pyjpegls plugin decodes which compressed transfer syntax, for the refusal message.
_PLUGIN_HINTS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg (or pillow)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pyjpegls (or pylibjpeg-libjpeg)",
    "1.2.840.10008.1.2.4.81": "pyjpegls (or pylibjpeg-libjpeg)",
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg>=2.4",
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg>=2.4",
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg>=2.4",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",
}


_TAGS: dict[str, BaseTag] = {}  # keyword -> tag, filled by _tag()


def _tag(keyword: str) -> BaseTag:
    """The tag of a keyword, looked up once: pydicom parses a keyword string on *every* access (~17 µs,
    more than converting the element), which made tag look-ups a third of the time to read a CT slice."""
    tag = _TAGS.get(keyword)
    if tag is None:
        number = tag_for_keyword(keyword)
        if number is None:
            raise KeyError(f"not a DICOM keyword: {keyword}")
        tag = _TAGS[keyword] = BaseTag(number)
    return tag


def _has(ds: Dataset, keyword: str) -> bool:
    """``keyword in ds``, through the cached tag."""
    return _tag(keyword) in ds


def _get(ds: Dataset, keyword: str) -> Any:
    """``ds.get(keyword)`` (the element's value, or None), through the cached tag."""
    tag = _tag(keyword)
    return ds[tag].value if tag in ds else None


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
    if not any(_has(ds, keyword) for keyword in ("SOPClassUID", "Modality", *_PIXEL_KEYWORDS)):
        raise NotDicomError(path, "not a DICOM, NIfTI, PNG, JPEG or TIFF file")
    return ds


def read_dicom(path: str | Path, modality: str | None = None) -> list[Slice]:
    """All frames of one DICOM file as slices, in stored frame order (``index`` = frame number)."""
    slices = slices_from_dataset(read_dataset(path), path, modality)
    for index, item in enumerate(slices):
        item.index = index
    return slices


def read_dicom_series(folder: str | Path, modality: str | None = None) -> list[Slice]:
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
        entries.extend((number, item) for item in slices_from_dataset(ds, path, modality))
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


def slices_from_dataset(ds: Dataset, path: str | Path, modality: str | None = None) -> list[Slice]:
    """Decode a parsed dataset into slices (``index`` left as the frame number).

    Any failure, including a malformed header value met on the way, is a :class:`ReadError` naming the file.
    """
    try:
        return _slices(ds, path, modality)
    except ReadError:
        raise
    except Exception as exc:
        raise ReadError(path, f"malformed DICOM ({type(exc).__name__}: {exc})") from exc


def _slices(ds: Dataset, path: str | Path, modality: str | None) -> list[Slice]:
    _refuse_non_images(ds, path)
    _ensure_transfer_syntax(ds, path)
    file_modality = _text(ds, "Modality") or modality or "OT"
    attributes = patient_attributes(ds)
    identifiers = {
        "patient_id": _text(ds, "PatientID"),
        "study_uid": _text(ds, "StudyInstanceUID"),
        "series_uid": _text(ds, "SeriesInstanceUID"),
    }
    invert = file_modality not in QUANTITATIVE_MODALITIES and (
        _get(ds, "PhotometricInterpretation") == "MONOCHROME1"
        or _get(ds, "PresentationLUTShape") == "INVERSE"
    )
    groups = _FrameGroups(ds)
    native = native_pixels(ds, invert) if groups.empty else None
    images = [native] if native is not None else _lut_frames(ds, path, groups, invert)
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


def _lut_frames(ds: Dataset, path: str | Path, groups: _FrameGroups, invert: bool) -> list[np.ndarray]:
    """Every frame through pydicom's decoders and ``apply_modality_lut`` (the general path), as float32."""
    images = []
    for number, frame in enumerate(_decode(ds, path)):
        lut = _frame_lut(ds, groups, number)
        pixels = apply_modality_lut(frame, lut)
        if invert:
            low, high = _output_range(ds, lut, frame)
            pixels = (low + high) - pixels
        images.append(np.ascontiguousarray(pixels, dtype=np.float32))
    return images


def native_pixels(ds: Dataset, invert: bool) -> np.ndarray | None:
    """Physical values of a plain single-frame native image straight from its Pixel Data bytes, or None.

    Why: for uncompressed files pydicom's ``pixel_array`` + ``apply_modality_lut`` spend most of their time
    on option handling, validation and float64 temporaries, not on the pixels. This path views the bytes
    with ``np.frombuffer`` and returns values **bit-identical** to the general path (the tests check it):

    * stored values: dtype from Bits Allocated / Pixel Representation (little-endian syntaxes only); when
      Bits Stored < Bits Allocated the unused high bits are dropped with the left-then-right shift that
      pydicom 3 applies (``correct_unused_bits``), which sign-extends signed data;
    * rescale: when slope and intercept are integers and every value they produce (and the inversion sum)
      is below 2**24 in magnitude, float32 arithmetic is exact, so ``x * slope + intercept`` in float32 equals
      ``apply_modality_lut``'s float64 result cast to float32 (CT's usual 1 / -1024 is such a case);
      otherwise the float64 arithmetic of ``apply_modality_lut`` is repeated and cast;
    * inversion (MONOCHROME1 / INVERSE) uses the same stored-range bounds as the general path.

    None (take the general path) for anything else: compressed or big-endian data, multi-frame files, Bits
    Allocated other than 8/16, float pixel data, a Modality LUT Sequence, rescale attributes that are empty
    or multi-valued, Pixel Data that is not exactly one frame long (pydicom then warns or refuses).
    """
    if _get(ds.file_meta, "TransferSyntaxUID") not in _NATIVE_SYNTAXES or not _has(ds, "PixelData"):
        return None
    if (
        any(_has(ds, keyword) for keyword in _NOT_NATIVE_KEYWORDS)
        or int(_get(ds, "NumberOfFrames") or 1) != 1
    ):
        return None
    rows, columns = _get(ds, "Rows"), _get(ds, "Columns")
    allocated, bits = _get(ds, "BitsAllocated"), _get(ds, "BitsStored")
    signed = _get(ds, "PixelRepresentation")
    if not (
        isinstance(rows, int)
        and isinstance(columns, int)
        and rows > 0
        and columns > 0
        and allocated in (8, 16)
        and isinstance(bits, int)
        and 1 <= bits <= allocated
        and signed in (0, 1)
    ):
        return None
    element = ds[_tag("PixelData")]
    count, frame_bytes = rows * columns, rows * columns * allocated // 8
    if element.is_undefined_length or not isinstance(element.value, bytes):
        return None
    if len(element.value) not in (frame_bytes, frame_bytes + 1):  # + 1: the even-length padding byte
        return None
    rescale = _rescale(ds)
    if rescale is None:
        return None
    slope, intercept = rescale
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    stored = np.frombuffer(element.value, dtype=dtype, count=count).reshape(rows, columns)
    if bits < allocated:
        shift = allocated - bits
        stored = np.right_shift(np.left_shift(stored, shift), shift)
    lowest, highest = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    low, high = sorted((lowest * slope + intercept, highest * slope + intercept))
    exact = (
        slope.is_integer()
        and intercept.is_integer()
        and max(-lowest, highest) * abs(slope) < _EXACT_FLOAT32
        and max(abs(intercept), -low, high, abs(low + high)) < _EXACT_FLOAT32
    )
    if exact:
        pixels = stored.astype(np.float32)
        if slope != 1.0:
            pixels *= np.float32(slope)
        # added even when 0: it turns the -0.0 of a negative slope into 0.0, as the float64 path does
        pixels += np.float32(intercept)
        if invert:
            np.subtract(np.float32(low + high), pixels, out=pixels)
        return pixels
    values = stored.astype(np.float64) * slope + intercept
    if invert:
        values = (low + high) - values
    return values.astype(np.float32)


def _rescale(ds: Dataset) -> tuple[float, float] | None:
    """(slope, intercept); (1, 0) when not both are present (``apply_modality_lut`` then leaves the values
    alone, which the identity reproduces exactly); None when present but not one finite number each (the
    general path then reports the malformed file)."""
    if not _has(ds, "RescaleSlope") or not _has(ds, "RescaleIntercept"):
        return 1.0, 0.0
    slope, intercept = _get(ds, "RescaleSlope"), _get(ds, "RescaleIntercept")
    if not isinstance(slope, (int, float)) or not isinstance(intercept, (int, float)):
        return None
    slope, intercept = float(slope), float(intercept)
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        return None
    return slope, intercept


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
    value = _get(ds, keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _refuse_non_images(ds: Dataset, path: str | Path) -> None:
    file_meta = getattr(ds, "file_meta", None)
    sop = str(
        _get(ds, "SOPClassUID") or (_get(file_meta, "MediaStorageSOPClassUID") if file_meta else "") or ""
    )
    for prefix, what in _REFUSED_SOP_PREFIXES.items():
        if sop.startswith(prefix) and sop != _RT_IMAGE:
            raise ReadError(path, f"{what} ({UID(sop).name}), not an image to pre-train on")
    modality = _text(ds, "Modality")
    if modality in _REFUSED_MODALITIES:
        raise ReadError(path, f"Modality {modality} is not an image to pre-train on")
    if not any(_has(ds, keyword) for keyword in _PIXEL_KEYWORDS):
        raise ReadError(path, "not an image: no Pixel Data element")
    samples = int(_get(ds, "SamplesPerPixel") or 1)
    photometric = str(_get(ds, "PhotometricInterpretation") or "MONOCHROME2")
    if samples > 1 or photometric not in _GRAYSCALE:
        raise ReadError(
            path,
            f"colour image (Photometric Interpretation {photometric}, {samples} samples per pixel); "
            "only grayscale DICOM is read",
        )


def _ensure_transfer_syntax(ds: Dataset, path: str | Path) -> None:
    """Give a meta-less file the transfer syntax it was parsed with, when that is enough to decode it."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and _get(file_meta, "TransferSyntaxUID"):
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


def _decode(ds: Dataset, path: str | Path) -> list[np.ndarray]:
    """Decoded frames as a list of 2-D arrays; decoder failures become reasons a user can act on."""
    syntax = UID(ds.file_meta.TransferSyntaxUID)
    named = f"transfer syntax {syntax.name} ({syntax})"
    try:
        array = ds.pixel_array
    except NotImplementedError as exc:
        raise ReadError(path, f"no decoder exists in pydicom for {named}") from exc
    except RuntimeError as exc:
        if "missing dependencies" in str(exc):
            hint = _PLUGIN_HINTS.get(str(syntax), "a pydicom pixel data plugin")
            raise ReadError(path, f"no decoder installed for {named}; install {hint}") from exc
        raise ReadError(path, f"compressed pixel data ({named}) failed to decode: {exc}") from exc
    except ValueError as exc:
        raise ReadError(path, f"pixel data unreadable (truncated or inconsistent header): {exc}") from exc
    except (AttributeError, KeyError, TypeError) as exc:
        raise ReadError(path, f"pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
    # Colour is refused before decoding, so a 3-D array is frames × rows × columns.
    return list(array) if array.ndim == 3 else [array]


class _FrameGroups:
    """Per-frame, else Shared, Functional Group items of an enhanced multi-frame file, fetched once per file.

    Looking the two sequences up on the full dataset for every frame and attribute would cost more than
    decoding a small frame.
    """

    def __init__(self, ds: Dataset) -> None:
        self._per_frame = _get(ds, "PerFrameFunctionalGroupsSequence") or []
        shared = _get(ds, "SharedFunctionalGroupsSequence") or []
        self._shared = shared[0] if shared else None

    @property
    def empty(self) -> bool:
        """No functional groups: a plain single-frame-style header."""
        return not self._per_frame and self._shared is None

    def item(self, frame: int, sequence: str) -> Dataset | None:
        """First item of ``sequence`` that applies to ``frame``, or None (plain single-frame files)."""
        own = self._per_frame[frame] if frame < len(self._per_frame) else None
        for group in (own, self._shared):
            if group is not None and (found := _get(group, sequence)):
                return found[0]
        return None


def _frame_lut(ds: Dataset, groups: _FrameGroups, frame: int) -> Dataset:
    """The dataset whose modality LUT applies to ``frame``: the frame's Pixel Value Transformation item
    (it holds Rescale Slope/Intercept, which is all ``apply_modality_lut`` reads), else ``ds`` itself."""
    transform = groups.item(frame, "PixelValueTransformationSequence")
    if transform is None or "RescaleSlope" not in transform or "RescaleIntercept" not in transform:
        return ds
    return transform


def _output_range(ds: Dataset, lut: Dataset, frame: np.ndarray) -> tuple[float, float]:
    """Smallest and largest value the stored range can take after the modality LUT (for inversion)."""
    if frame.dtype.kind == "f":
        return float(frame.min()), float(frame.max())
    bits = int(_get(ds, "BitsStored") or frame.dtype.itemsize * 8)
    if int(_get(ds, "PixelRepresentation") or 0):
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    else:
        stored = np.array([0, 2**bits - 1])
    if lut.get("ModalityLUTSequence"):
        descriptor = lut.ModalityLUTSequence[0].LUTDescriptor
        first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
        stored = np.arange(first, first + entries)
    mapped = apply_modality_lut(stored, lut)
    return float(mapped.min()), float(mapped.max())


def _spacing(ds: Dataset, groups: _FrameGroups, frame: int) -> tuple[float, float] | None:
    """(row mm, column mm) from Pixel Spacing, else Imager Pixel Spacing (projection radiographs)."""
    measures = groups.item(frame, "PixelMeasuresSequence")
    for source in (measures, ds):
        if source is None:
            continue
        for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
            value = _get(source, keyword)
            if value is not None and len(value) == 2:
                return float(value[0]), float(value[1])
    return None


def _position(ds: Dataset, groups: _FrameGroups, frame: int) -> float | None:
    """Millimetres along the slice normal: ``ImagePositionPatient · (row cosine × column cosine)``."""
    plane = groups.item(frame, "PlanePositionSequence")
    orientation = groups.item(frame, "PlaneOrientationSequence")
    position = _get(plane or ds, "ImagePositionPatient")
    cosines = _get(orientation or ds, "ImageOrientationPatient")
    if position is None or cosines is None or len(position) != 3 or len(cosines) != 6:
        return None
    # Plain float arithmetic: numpy's cross/dot on 3-vectors cost ~0.1 ms a slice in small-array overhead.
    rx, ry, rz, cx, cy, cz = (float(v) for v in cosines)
    normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)
    if math.hypot(*normal) < 1e-6:  # degenerate orientation: no usable normal
        return None
    px, py, pz = (float(v) for v in position)
    return px * normal[0] + py * normal[1] + pz * normal[2]
