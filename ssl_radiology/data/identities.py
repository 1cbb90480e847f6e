"""Who is in an image, read from a public dataset's own layout: patient and study IDs, and the official test set.

Chest X-ray downloads carry no DICOM header, so without this module every JPG/PNG would be its own patient
(``prepare``'s path fallback) and no patient-level split would be possible. Each layout knows where its
dataset writes the IDs:

* ``chexpert`` — ``{train,valid,test}/patient00001/study1/view1_frontal.jpg``: patient folder, study folder;
  official test images are those under ``valid/`` and ``test/``.
* ``nih`` — ChestX-ray14 ``images_*/images/00000001_000.png``: the file name is the zero-padded "Patient ID"
  of ``Data_Entry_2017*.csv`` and the "Follow-up #"; official test images are listed in ``test_list.txt``.
* ``mimic`` — MIMIC-CXR(-JPG) ``files/p10/p10000032/s50414267/<dicom_id>.jpg``: ``subject_id`` and
  ``study_id`` from the folders; official test images are the ``split == "test"`` rows of
  ``mimic-cxr-2.0.0-split.csv[.gz]``.
* ``medmnist`` — the PNGs written from ``.npz`` arrays (``<stem>/<split>/<index>.png``): MedMNIST publishes
  no patient IDs but its splits are patient-level, so each image is its own patient and ``test`` is the
  official test array.

Raw IDs are namespaced by dataset (``"chexpert/patient00001"``, ``"nih/1"``, ``"mimic/10000032"``) before
``prepare`` turns them into keys with :func:`ssl_radiology.data.keys.patient_key`, so two datasets cannot
collide by numbering patients alike. Identify callables are plain dataclass methods: they pickle into
``prepare``'s worker processes. ``official_test`` predicates read split files and run in the main process only.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import pandas as pd

from ssl_radiology.errors import UserError

Identity = tuple[str | None, str | None]
Predicate = Callable[[str], bool]


class Layout(ABC):
    """A dataset's file layout: ``identify(rel, slice)`` for ``prepare`` and the official test predicate."""

    name: ClassVar[str] = ""

    @abstractmethod
    def identify(self, rel: str, sl: Any = None) -> Identity:
        """(raw patient ID, raw study ID) of the file at ``rel`` (posix, relative to the dataset root);
        ``(None, None)`` leaves the file to ``prepare``'s own keys (DICOM header, else the path)."""

    @abstractmethod
    def official_test(self, root: Path) -> Predicate:
        """True for the ``rel`` paths of the official test (and validation-as-test) images under ``root``."""


@dataclass(frozen=True)
class Chexpert(Layout):
    name: ClassVar[str] = "chexpert"
    test_folders: ClassVar[frozenset[str]] = frozenset({"valid", "test"})

    def identify(self, rel: str, sl: Any = None) -> Identity:
        parts = PurePosixPath(rel).parts
        for i, part in enumerate(parts):
            if re.fullmatch(r"patient\d+", part):
                # CheXpert numbers patients per release folder (valid/ patients are distinct from train/)
                patient = f"chexpert/{part}"
                study = parts[i + 1] if i + 2 < len(parts) else "study"
                return patient, f"{patient}/{study}"
        return None, None

    def official_test(self, root: Path) -> Predicate:
        def is_test(rel: str) -> bool:
            parts = PurePosixPath(rel).parts
            return any(p in self.test_folders and i + 1 < len(parts) for i, p in enumerate(parts))

        return is_test


NIH_NAME = re.compile(r"(\d{8})_(\d{3})\.png", re.IGNORECASE)


@dataclass(frozen=True)
class Nih(Layout):
    name: ClassVar[str] = "nih"

    def identify(self, rel: str, sl: Any = None) -> Identity:
        match = NIH_NAME.fullmatch(PurePosixPath(rel).name)
        if match is None:
            return None, None
        patient = f"nih/{int(match.group(1))}"  # the CSV's "Patient ID" is the unpadded number
        return patient, f"{patient}/{int(match.group(2))}"

    def official_test(self, root: Path) -> Predicate:
        listing = root / "test_list.txt"
        if not listing.is_file():
            raise UserError(
                f"{root}: no test_list.txt (the official ChestX-ray14 test list) to exclude test images; "
                "put it beside the images, or set include_test: true"
            )
        names = frozenset(listing.read_text().split())
        return lambda rel: PurePosixPath(rel).name in names


@dataclass(frozen=True)
class Mimic(Layout):
    name: ClassVar[str] = "mimic"

    def identify(self, rel: str, sl: Any = None) -> Identity:
        subject = study = None
        for part in PurePosixPath(rel).parts[:-1]:
            if re.fullmatch(r"p\d{3,}", part):  # p10000032 (the p10 group folder has 2 digits)
                subject = part[1:]
            elif re.fullmatch(r"s\d+", part):
                study = part[1:]
        if subject is None:
            return None, None
        return f"mimic/{subject}", f"mimic/{study}" if study else None

    def official_test(self, root: Path) -> Predicate:
        table = mimic_table(root, "split")
        if table is None:
            raise UserError(
                f"{root}: no mimic-cxr-2.0.0-split.csv(.gz) to exclude the official test images; "
                "put it beside files/, or set include_test: true"
            )
        test = frozenset(table.loc[table["split"].astype(str) == "test", "dicom_id"].astype(str))
        return lambda rel: PurePosixPath(rel).name.split(".")[0] in test


@dataclass(frozen=True)
class MedMnist(Layout):
    name: ClassVar[str] = "medmnist"

    def identify(self, rel: str, sl: Any = None) -> Identity:
        image = f"medmnist/{PurePosixPath(rel).with_suffix('').as_posix()}"
        return image, image

    def official_test(self, root: Path) -> Predicate:
        return lambda rel: PurePosixPath(rel).parts[-2:-1] == ("test",)


@dataclass(frozen=True)
class FileNamePattern(Layout):
    """Any folder whose file names carry a patient ID (``patient_regex``, first group), e.g. ImageFolder tasks."""

    pattern: str = ""

    def identify(self, rel: str, sl: Any = None) -> Identity:
        match = re.search(self.pattern, PurePosixPath(rel).name)
        return (f"pattern/{match.group(1)}", None) if match else (None, None)

    def official_test(self, root: Path) -> Predicate:
        return lambda rel: False


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (Chexpert(), Nih(), Mimic(), MedMnist())}


def layout(name: str) -> Layout:
    """The layout called ``name`` (the ``layout:`` key of a data YAML)."""
    if name not in LAYOUTS:
        raise UserError(f"unknown dataset layout '{name}' (known: {', '.join(sorted(LAYOUTS))})")
    return LAYOUTS[name]


def mimic_table(root: Path, which: str) -> pd.DataFrame | None:
    """``mimic-cxr-2.0.0-<which>.csv`` (or ``.csv.gz``, as PhysioNet ships them) beside ``files/`` or in its parent."""
    for folder in (root, root.parent):
        for suffix in (".csv", ".csv.gz"):
            path = folder / f"mimic-cxr-2.0.0-{which}{suffix}"
            if path.is_file():
                return pd.read_csv(path)
    return None
