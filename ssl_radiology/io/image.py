"""PNG, JPEG and TIFF files (8- or 16-bit) to slices, with Pillow.

Pixels are the stored values as float32 (0–255 for 8-bit, 0–65535 for 16-bit), rows × columns as stored
(height × width). Colour images are converted to grayscale with Pillow's ``convert("L")``, the ITU-R
BT.601 luma ``L = 0.299 R + 0.587 G + 0.114 B`` (alpha ignored): natural photographs stand in for ImageNet
in cross-domain experiments and every model here takes one channel. A multi-page TIFF gives one slice per
page. The modality is the caller's, else ``"OT"``; spacing and position are unknown (``None``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from ssl_radiology.io.limits import check_decoded
from ssl_radiology.io.slice import ReadError, Slice

DEFAULT_MODALITY = "OT"
# Modes whose single band is already the intensity; everything else (RGB, RGBA, P, LA, CMYK, ...) is colour.
_GRAYSCALE_MODES = frozenset({"L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})


def read_image(path: str | Path, modality: str | None = None, max_bytes: int | None = None) -> list[Slice]:
    """Every page of a PNG/JPEG/TIFF as a grayscale slice.

    ``max_bytes``: refuse, before decoding, an image whose pages (size from the header) exceed it as float32.
    """
    try:
        with Image.open(path) as image:
            check_decoded(path, (getattr(image, "n_frames", 1), image.height, image.width), max_bytes)
            pages = [_grayscale(page) for page in ImageSequence.Iterator(image)]
    except ReadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ReadError(path, f"cannot read image ({type(exc).__name__}: {exc})") from exc
    return [
        Slice(
            pixels=pixels,
            modality=modality or DEFAULT_MODALITY,
            spacing=None,
            source=str(path),
            index=index,
            position=None,
        )
        for index, pixels in enumerate(pages)
    ]


def _grayscale(page: Image.Image) -> np.ndarray:
    if page.mode not in _GRAYSCALE_MODES:
        page = (page if page.mode == "RGB" else page.convert("RGB")).convert("L")
    return np.asarray(page, dtype=np.float32)
