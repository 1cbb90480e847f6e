"""DICOM tag look-ups by keyword through a cache of tags: pydicom parses a keyword string on every access."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

_TAGS: dict[str, BaseTag] = {}  # keyword -> tag, filled by tag_of()


def tag_of(keyword: str) -> BaseTag:
    """The tag of a keyword, looked up once: pydicom parses a keyword string on *every* access (~17 µs,
    more than converting the element), which made tag look-ups a third of the time to read a CT slice."""
    tag = _TAGS.get(keyword)
    if tag is None:
        number = tag_for_keyword(keyword)
        if number is None:
            raise KeyError(f"not a DICOM keyword: {keyword}")
        tag = _TAGS[keyword] = BaseTag(number)
    return tag


def has(ds: Dataset, keyword: str) -> bool:
    """``keyword in ds``, through the cached tag."""
    return tag_of(keyword) in ds


def value_of(ds: Dataset, keyword: str) -> Any:
    """``ds.get(keyword)`` (the element's value, or None), through the cached tag."""
    tag = tag_of(keyword)
    return ds[tag].value if tag in ds else None
