"""NIfTI-1/2 volumes (``.nii``, ``.nii.gz``) as axial slices; see :mod:`ssl_radiology.io.nifti`."""

from __future__ import annotations

from pathlib import Path

from ssl_radiology.io.formats import Format, register_format
from ssl_radiology.io.nifti import read_nifti


def _sniff(head: bytes, path: Path) -> bool:
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or head[4:8] == b"n+2\x00":
        return True
    return head.startswith(b"\x1f\x8b") and path.name.lower().endswith(".nii.gz")  # gzip: the name decides


register_format(
    Format(name="nifti", suffixes=(".nii", ".nii.gz"), sniff=_sniff, read=read_nifti, priority=80)
)
