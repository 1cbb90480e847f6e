"""The unit every reader returns (:class:`Slice`) and the one error they raise (:class:`ReadError`).

Kept apart from the readers so that ``ssl_radiology.data`` can type against a slice without importing
pydicom, nibabel or PIL.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ReadError(ValueError):
    """A source that cannot be turned into slices; ``str()`` is ``"<path>: <reason>"``.

    ``ssl-rad prepare`` writes ``path`` and ``reason`` into ``rejected.csv`` and goes on with the next
    file, so the reason must say what is wrong (and, where it can, how to fix it) on its own.
    """

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class Slice:
    """One 2-D image in physical values, with what downstream code needs to key, split and resize it.

    ``patient_id``, ``study_uid`` and ``series_uid`` are raw identifiers: they exist only so that
    ``ssl_radiology.data.keys.hash_key`` can hash them, and must never be logged or stored as they are.
    """

    pixels: np.ndarray
    modality: str
    spacing: tuple[float, float] | None
    source: str
    index: int
    position: float | None
    patient_id: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
