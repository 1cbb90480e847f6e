"""``find_sources``: the candidate files ``ssl-rad prepare`` decodes one by one, chosen by name only."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from ssl_radiology.io import ReadError, find_sources, read_slices


def test_candidates_are_found_recursively_and_sorted(tmp_path):
    names = [
        "b/series/IM0002", "b/series/IM0001", "b/series/DICOMDIR", "a/chest.png", "a/scan.dcm",
        "a/vol.nii.gz", "a/vol.nii", "a/photo.JPG", "a/labels.csv", "a/meta.json", "a/notes.txt",
        "a/README.md", "a/archive.gz", "a/.hidden.dcm", ".git/objects/ab", "c/.cache/x.dcm", "c/deep/x.tiff",
    ]  # fmt: skip
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [path.relative_to(tmp_path).as_posix() for path in find_sources(tmp_path)]
    assert found == [
        "a/chest.png", "a/photo.JPG", "a/scan.dcm", "a/vol.nii", "a/vol.nii.gz",
        "b/series/IM0001", "b/series/IM0002", "c/deep/x.tiff",
    ]  # fmt: skip


def test_a_file_root_is_itself_and_a_missing_root_is_an_error(tmp_path):
    ct = Path(get_testdata_file("CT_small.dcm"))
    assert find_sources(ct) == [ct]
    with pytest.raises(ReadError, match="no such file or folder"):
        find_sources(tmp_path / "absent")


def test_pydicom_test_tree_every_candidate_reads_or_gives_a_reason():
    """On a real, messy tree (pydicom's DICOMDIR test set) each candidate either reads or names its fault."""
    root = Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests"
    sources = find_sources(root)
    assert sources and all(path.name != "DICOMDIR" for path in sources)
    read, refused = 0, 0
    for path in sources:
        try:
            read += len(read_slices(path)) > 0
        except ReadError as error:
            assert error.path == str(path) and error.reason
            refused += 1
    assert read > 20 and read + refused == len(sources)
