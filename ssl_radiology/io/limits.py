"""Memory bounds per file: refuse an image *before* decoding when its header claims more than a limit.

A 6 KB RLE-compressed DICOM can claim 65535 × 65535 pixels; pydicom then allocates the full frame (8 GB)
before finding the data short, and with one decoder per core that multiplies. Every reader therefore
computes the decoded size from the header (rows × columns × frames, as float32: the physical values the
readers return) and calls :func:`check_decoded` before touching pixel data; after decoding it checks the
array against the header (:func:`check_shape`), so a file cannot decode to more (or other) than it declared.

The default limit is sized from the memory available when ``prepare`` starts, divided by the decoder
processes and by :data:`PEAK_FACTOR` (the general decoding path holds the stored frame, a float64 rescale
temporary and the float32 result at once: ~4× the float32 size), and capped at :data:`CAP_BYTES` (4 GiB of
float32: a 1000-frame 1024² volume; a header claiming more is far more likely hostile or broken than real).
``--max-image-mb`` sets it explicitly, in either direction.
"""

from __future__ import annotations

import math
import os

from ssl_radiology.io.slice import ReadError

MB = 2**20
PEAK_FACTOR = 4
FLOOR_BYTES = 64 * MB  # never below a 4096² float32 radiograph
CAP_BYTES = 4096 * MB
OUTPUT_ITEMSIZE = 4  # float32


def available_memory() -> int:
    """Bytes the kernel reports as available (``MemAvailable``), else free physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 * 2**30


def default_limit(workers: int) -> int:
    """Largest decoded image (bytes) each of ``workers`` decoders may hold without exhausting memory."""
    return min(CAP_BYTES, max(FLOOR_BYTES, available_memory() // (max(1, workers) * PEAK_FACTOR)))


def check_decoded(path: object, shape: tuple[int, ...], limit: int | None) -> None:
    """Refuse ``path`` when an image of ``shape`` (as float32) would exceed ``limit`` bytes."""
    if limit is None:
        return
    if any(size < 0 for size in shape):
        raise ReadError(path, f"header declares a negative image size {shape}")
    needed = math.prod(shape) * OUTPUT_ITEMSIZE
    if needed > limit:
        dims = " × ".join(str(size) for size in shape)
        raise ReadError(
            path,
            f"image of {dims} pixels would need {needed / MB:,.0f} MB decoded, over the limit of "
            f"{limit / MB:,.0f} MB per image (raise it with --max-image-mb)",
        )


def check_shape(path: object, actual: tuple[int, ...], declared: tuple[int, ...]) -> None:
    """The decoded array must have exactly the shape the header declared."""
    if tuple(actual) != tuple(declared):
        raise ReadError(
            path, f"decoded pixel data has shape {tuple(actual)}, the header declares {tuple(declared)}"
        )
