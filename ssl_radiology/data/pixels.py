"""Pixels of a prepared dataset: every slice resized (aspect kept, longer side ``image_size``), converted to
its stored type and padded to a square — the one geometry and value policy of ``ssl-rad prepare``.

* **Geometry.** Each slice is resized so that its *longer* side is ``image_size`` (aspect kept) and the
  shorter side is padded, centred, with the background: -1024 HU for CT, 0 for everything else. Padding
  rather than centre-cropping keeps the whole anatomy (a crop can cut off a lung apex or a lesion at the
  edge). Resizing is bilinear with antialiasing, the filter of ``torch.nn.functional.interpolate(
  antialias=True)``, done as two scipy.sparse products (:func:`fit_to_square`: ~0.45 ms for 512² → 256² on
  one core, half of torch's time; PIL's triangle filter is slower still and scikit-image 6× slower).
  ``spacing_row`` / ``spacing_col`` in the manifest are the mm per pixel *after* resizing.
* **Values.** CT is stored as int16 HU clipped to [-1024, 3071] (the 12-bit CT range; air and metal beyond
  it carry no tissue information). Every other modality has no absolute unit, so each image is stretched
  min–max to 0..65535 and stored as uint16 (after the reader's MONOCHROME1 inversion, so higher = brighter);
  an image without contrast (constant) is rejected because the stretch is undefined.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse

CT_RANGE = (-1024, 3071)
UINT16_MAX = 65535


@functools.lru_cache(maxsize=64)
def resize_weights(n_in: int, n_out: int) -> scipy.sparse.csr_matrix:
    """(n_out × n_in) sparse matrix of antialiased bilinear (triangle filter) weights along one axis.

    The same filter as ``torch.nn.functional.interpolate(mode="bilinear", antialias=True,
    align_corners=False)``: output pixel ``i`` is centred at ``(i + 0.5) * scale`` input pixels, the
    triangle is stretched by ``scale = n_in / n_out`` when shrinking (so it averages every input pixel it
    covers: antialiasing) and is plain linear interpolation when enlarging; weights that fall outside the
    image are dropped and the rest renormalised. The weights are computed in float64 (torch uses float32,
    so results agree to ~1e-5 of the value; the tests pin the agreement). Cached: a corpus has few sizes.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)  # half-width of the triangle, in input pixels
    centers = scale * (np.arange(n_out) + 0.5)
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    last = np.minimum((centers + support + 0.5).astype(np.int64), n_in)
    taps = int((last - first).max())
    columns = first[:, None] + np.arange(taps)[None, :]
    weights = np.clip(1.0 - np.abs(columns - centers[:, None] + 0.5) / support, 0.0, None)
    weights[columns >= last[:, None]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = scipy.sparse.csr_matrix(
        (
            weights.astype(np.float32).ravel(),
            (np.repeat(np.arange(n_out), taps), np.minimum(columns, n_in - 1).ravel()),
        ),
        shape=(n_out, n_in),
    )
    matrix.eliminate_zeros()
    return matrix


def fit_to_square(pixels: np.ndarray, size: int) -> tuple[np.ndarray, float, float]:
    """Resize (antialiased bilinear) so the longer side is ``size``; returns (image, row scale, col scale).

    The result is *not* padded yet; callers pad with their background after converting the values, so
    the padding never takes part in a min–max stretch. The resize is two sparse matrix products (rows,
    then columns) with :func:`resize_weights`: each output pixel touches only the few inputs under its
    filter, which takes half the time of torch's ``interpolate`` on one core (512² → 256²: ~0.45 vs ~1 ms)
    and needs no torch in the worker processes.
    """
    rows, cols = pixels.shape
    scale = size / max(rows, cols)
    new_rows, new_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    if (new_rows, new_cols) == (rows, cols):
        return np.array(pixels, dtype=np.float32), 1.0, 1.0  # a copy: callers convert it in place
    vertical = resize_weights(rows, new_rows) @ np.ascontiguousarray(pixels, dtype=np.float32)
    # scipy multiplies C-ordered rows only: transpose the (smaller) intermediate once, and hand back the
    # result as a transposed view (callers convert and stack it, which copies anyway).
    resized = resize_weights(cols, new_cols) @ np.ascontiguousarray(vertical.T)
    return resized.T, new_rows / rows, new_cols / cols


def pad_to_square(image: np.ndarray, size: int, background: float) -> np.ndarray:
    """Centre ``image`` on a ``size``² canvas filled with ``background`` (same dtype)."""
    if image.shape == (size, size):
        return image
    canvas = np.full((size, size), background, dtype=image.dtype)
    top, left = (size - image.shape[0]) // 2, (size - image.shape[1]) // 2
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas


def to_stored(pixels: np.ndarray, modality: str, size: int) -> tuple[np.ndarray, float, float]:
    """Physical values → the stored ``size``² int16 (CT, HU) or uint16 (others, 0..65535) image.

    Non-finite values are looked for after resizing (4× fewer pixels at 512² → 256²): every input pixel
    has a positive weight in some output pixel, so a NaN or infinity always reaches the resized image.
    """
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ValueError(f"not a 2-D image (shape {pixels.shape})")
    image, row_scale, col_scale = fit_to_square(pixels, size)
    if not np.isfinite(image).all():
        raise ValueError("non-finite pixel values")
    if modality == "CT":
        np.clip(image, *CT_RANGE, out=image)
        # order="C": the resized image is a transposed view, and shards must stack C-ordered images (a
        # mixed-order stack makes np.save fall back to slow chunked writing)
        stored = np.rint(image, out=image).astype(np.int16, order="C")
        return pad_to_square(stored, size, CT_RANGE[0]), row_scale, col_scale
    low, high = float(image.min()), float(image.max())
    if high <= low:
        raise ValueError("constant image (no contrast to stretch)")
    stretched = np.rint((image - low) * (UINT16_MAX / (high - low))).astype(np.uint16, order="C")
    return pad_to_square(stretched, size, 0), row_scale, col_scale
