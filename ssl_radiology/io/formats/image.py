"""PNG, JPEG and TIFF files (8/16-bit, colour → luma); see :mod:`ssl_radiology.io.image`."""

from __future__ import annotations

from ssl_radiology.io.formats import Format, register_format
from ssl_radiology.io.image import read_image

_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")

register_format(
    Format(
        name="image",
        suffixes=(".png", ".jpg", ".jpeg", ".tif", ".tiff"),
        sniff=lambda head, path: head.startswith(_MAGIC),
        read=read_image,
        priority=90,
    )
)
