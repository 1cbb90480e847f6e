"""DICOM files (with or without the 128-byte preamble + ``DICM``); see :mod:`ssl_radiology.io.dicom`."""

from __future__ import annotations

from ssl_radiology.io.dicom import read_dicom
from ssl_radiology.io.formats import Format, register_format

register_format(
    Format(
        name="dicom",
        suffixes=(".dcm", ".dicom", ".ima", ""),
        sniff=lambda head, path: head[128:132] == b"DICM",
        read=read_dicom,
        priority=100,
        fallback=True,  # files without preamble are DICOM only if they parse as such
    )
)
