"""DICOM pixel data to physical values: the bit-exact native fast path and the general pydicom path.

- the modality LUT is applied with ``pydicom.pixels.apply_modality_lut`` (Rescale Slope/Intercept or a
  Modality LUT Sequence), so CT comes out in Hounsfield units; Bits Stored and Pixel Representation are
  honoured by pydicom's decoders. Multi-frame files take the rescale of each frame from the Per-frame (else
  Shared) Functional Groups' Pixel Value Transformation Sequence, which ``apply_modality_lut`` ignores.
- plain uncompressed (little-endian, single-frame, 8/16-bit) files skip ``pixel_array``:
  :func:`native_pixels` views the Pixel Data bytes and rescales them with values bit-identical to the
  general path (a 512² CT slice reads ~2.5× faster; see its docstring and docs/benchmarks.md).
- the decoded array must have the shape the header declares (:func:`declared_shape`, checked against the
  memory bound before anything decodes).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ssl_radiology.io.dicom_tags import has, tag_of, value_of
from ssl_radiology.io.limits import check_shape
from ssl_radiology.io.slice import ReadError

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


def lut_frames(
    ds: Dataset, path: str | Path, groups: FrameGroups, invert: bool, declared: tuple[int, int, int]
) -> list[np.ndarray]:
    """Every frame through pydicom's decoders and ``apply_modality_lut`` (the general path), as float32."""
    images = []
    for number, frame in enumerate(decode_frames(ds, path, declared)):
        lut = frame_lut(ds, groups, number)
        pixels = apply_modality_lut(frame, lut)
        if invert:
            low, high = output_range(ds, lut, frame)
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
    if value_of(ds.file_meta, "TransferSyntaxUID") not in _NATIVE_SYNTAXES or not has(ds, "PixelData"):
        return None
    if (
        any(has(ds, keyword) for keyword in _NOT_NATIVE_KEYWORDS)
        or int(value_of(ds, "NumberOfFrames") or 1) != 1
    ):
        return None
    rows, columns = value_of(ds, "Rows"), value_of(ds, "Columns")
    allocated, bits = value_of(ds, "BitsAllocated"), value_of(ds, "BitsStored")
    signed = value_of(ds, "PixelRepresentation")
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
    element = ds[tag_of("PixelData")]
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
    if not has(ds, "RescaleSlope") or not has(ds, "RescaleIntercept"):
        return 1.0, 0.0
    slope, intercept = value_of(ds, "RescaleSlope"), value_of(ds, "RescaleIntercept")
    if not isinstance(slope, (int, float)) or not isinstance(intercept, (int, float)):
        return None
    slope, intercept = float(slope), float(intercept)
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        return None
    return slope, intercept


def declared_shape(ds: Dataset, path: str | Path) -> tuple[int, int, int]:
    """(frames, rows, columns) from the header, checked to be positive integers before anything decodes."""
    try:
        shape = (
            int(value_of(ds, "NumberOfFrames") or 1),
            int(value_of(ds, "Rows")),
            int(value_of(ds, "Columns")),
        )
    except (TypeError, ValueError) as exc:
        raise ReadError(
            path, f"header without a valid image size (Rows, Columns, Number of Frames): {exc}"
        ) from exc
    if min(shape) < 1:
        raise ReadError(path, f"header declares an empty image (frames, rows, columns = {shape})")
    return shape


def decode_frames(ds: Dataset, path: str | Path, declared: tuple[int, int, int]) -> list[np.ndarray]:
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
    frames = array if array.ndim == 3 else array[None]
    check_shape(path, frames.shape, declared)
    return list(frames)


class FrameGroups:
    """Per-frame, else Shared, Functional Group items of an enhanced multi-frame file, fetched once per file.

    Looking the two sequences up on the full dataset for every frame and attribute would cost more than
    decoding a small frame.
    """

    def __init__(self, ds: Dataset) -> None:
        self._per_frame = value_of(ds, "PerFrameFunctionalGroupsSequence") or []
        shared = value_of(ds, "SharedFunctionalGroupsSequence") or []
        self._shared = shared[0] if shared else None

    @property
    def empty(self) -> bool:
        """No functional groups: a plain single-frame-style header."""
        return not self._per_frame and self._shared is None

    def item(self, frame: int, sequence: str) -> Dataset | None:
        """First item of ``sequence`` that applies to ``frame``, or None (plain single-frame files)."""
        own = self._per_frame[frame] if frame < len(self._per_frame) else None
        for group in (own, self._shared):
            if group is not None and (found := value_of(group, sequence)):
                return found[0]
        return None


def frame_lut(ds: Dataset, groups: FrameGroups, frame: int) -> Dataset:
    """The dataset whose modality LUT applies to ``frame``: the frame's Pixel Value Transformation item
    (it holds Rescale Slope/Intercept, which is all ``apply_modality_lut`` reads), else ``ds`` itself."""
    transform = groups.item(frame, "PixelValueTransformationSequence")
    if transform is None or "RescaleSlope" not in transform or "RescaleIntercept" not in transform:
        return ds
    return transform


def output_range(ds: Dataset, lut: Dataset, frame: np.ndarray) -> tuple[float, float]:
    """Smallest and largest value the stored range can take after the modality LUT (for inversion)."""
    if frame.dtype.kind == "f":
        return float(frame.min()), float(frame.max())
    bits = int(value_of(ds, "BitsStored") or frame.dtype.itemsize * 8)
    if int(value_of(ds, "PixelRepresentation") or 0):
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    else:
        stored = np.array([0, 2**bits - 1])
    if lut.get("ModalityLUTSequence"):
        descriptor = lut.ModalityLUTSequence[0].LUTDescriptor
        first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
        stored = np.arange(first, first + entries)
    mapped = apply_modality_lut(stored, lut)
    return float(mapped.min()), float(mapped.max())
