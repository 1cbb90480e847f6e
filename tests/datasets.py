"""Tiny fake downloads of public chest X-ray / MedMNIST datasets, laid out exactly as the official ones.

Each writer reproduces the official folder layout, file names and label-file columns (CheXpert-v1.0-small,
NIH ChestX-ray14 ``Data_Entry_2017_v2020.csv``, MIMIC-CXR-JPG 2.0.0, MedMNIST v2 ``.npz``) with a few rows and
synthetic pixels, and returns a :class:`Fixture` naming the patient identifiers that must never appear in
any output. Images are portrait (taller than wide) like real radiographs, so that the aspect-ratio policy
is exercised; each dataset also lists one missing and one unreadable image (official downloads have both
after an interrupted extraction), which a task must record and skip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

CHEXPERT_FINDINGS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
]  # fmt: skip
MIMIC_FINDINGS = sorted(CHEXPERT_FINDINGS)  # mimic-cxr-2.0.0-chexpert.csv orders them alphabetically
NIH_FINDINGS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]  # fmt: skip
NIH_COLUMNS = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


@dataclass
class Fixture:
    """A written fake download: its root and what identifies its patients."""

    root: Path
    identifiers: list[str]  # strings that must not appear in any output byte
    patients: dict[str, str] = field(default_factory=dict)  # image path relative to root -> raw patient ID
    test_files: set[str] = field(default_factory=set)  # relative paths of official test images
    bad_files: set[str] = field(default_factory=set)  # relative paths listed but missing or unreadable


def radiograph(seed: int, rows: int = 48, cols: int = 36, finding: float = 0.0) -> np.ndarray:
    """A portrait 8-bit "chest": two dark lungs in a brighter body, a brighter blob when ``finding`` > 0."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[0:rows, 0:cols]
    body = 150 - 60 * ((c - cols / 2) / cols) ** 2
    lungs = sum(
        np.exp(-(((r - rows * 0.45) / (rows * 0.25)) ** 2 + ((c - x) / (cols * 0.15)) ** 2))
        for x in (cols * 0.3, cols * 0.7)
    )
    image = (
        body - 90 * lungs + 70 * finding * np.exp(-(((r - rows * 0.6) ** 2 + (c - cols * 0.35) ** 2) / 18))
    )
    return np.clip(image + rng.normal(0, 6, (rows, cols)), 0, 255).astype(np.uint8)  # fmt: skip


def _save(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 truncated download")


def write_chexpert(parent: Path, train_patients: int = 30, valid_patients: int = 6, seed: int = 0) -> Fixture:
    """``parent/CheXpert-v1.0-small/{train.csv,valid.csv,train/...,valid/...}``; ROOT is the release folder."""
    root = parent / "CheXpert-v1.0-small"
    rng = np.random.default_rng(seed)
    fixture = Fixture(root=root, identifiers=[])
    for split, csv_name, first, n in (("train", "train.csv", 1, train_patients), ("valid", "valid.csv", 64541, valid_patients)):  # fmt: skip
        rows = []
        for p in range(first, first + n):
            patient = f"patient{p:05d}"
            fixture.identifiers.append(patient)
            for study in range(1, 3 if p % 3 == 0 else 2):
                for view, orientation in ((1, "frontal"), (2, "lateral")):
                    if orientation == "lateral" and p % 2:
                        continue
                    rel = f"{split}/{patient}/study{study}/view{view}_{orientation}.jpg"
                    labels = rng.choice(
                        [1.0, 0.0, -1.0, np.nan], size=len(CHEXPERT_FINDINGS), p=[0.35, 0.35, 0.15, 0.15]
                    )
                    labels[8] = [1.0, 0.0][p % 2] if split == "valid" else labels[8]  # both classes in valid
                    _save(root / rel, radiograph(p * 10 + study * 2 + view, finding=float(labels[2] == 1.0)))
                    fixture.patients[rel] = patient
                    if split == "valid":
                        fixture.test_files.add(rel)
                    rows.append(
                        {"Path": f"CheXpert-v1.0-small/{rel}", "Sex": ["Male", "Female"][p % 2], "Age": 20 + 3 * p % 70,
                         "Frontal/Lateral": orientation.capitalize(), "AP/PA": "AP" if orientation == "frontal" else "",
                         **dict(zip(CHEXPERT_FINDINGS, labels, strict=True))}
                    )  # fmt: skip
        if split == "train":  # a row whose file never arrived, and a file that does not decode
            missing, corrupt = (
                f"{split}/patient{first:05d}/study9/view1_frontal.jpg",
                rows[1]["Path"].split("/", 1)[1],
            )
            rows.append({**rows[0], "Path": f"CheXpert-v1.0-small/{missing}"})
            _corrupt(root / corrupt)
            fixture.bad_files |= {missing, corrupt}
        pd.DataFrame(rows).to_csv(root / csv_name, index=False)
    return fixture


def write_nih(root: Path, patients: int = 10, seed: int = 0) -> Fixture:
    """``root/{Data_Entry_2017_v2020.csv,train_val_list.txt,test_list.txt,images_00N/images/*.png}``."""
    rng = np.random.default_rng(seed)
    fixture = Fixture(root=root, identifiers=[])
    lines, train, test = [NIH_COLUMNS], [], []
    for i, pid in enumerate(range(30001, 30001 + patients)):
        fixture.identifiers += [f"{pid:08d}", str(pid)]
        for follow_up in range(1 + pid % 3):
            name = f"{pid:08d}_{follow_up:03d}.png"
            fixture.identifiers.append(name.removesuffix(".png"))
            found = [f for f in NIH_FINDINGS if rng.random() < 0.2] or ["No Finding"]
            rel = f"images_{1 + i % 2:03d}/images/{name}"
            _save(root / rel, radiograph(pid + follow_up, 40, 40, float("Effusion" in found)))
            fixture.patients[rel] = str(pid)
            (test if i >= patients - 3 else train).append(name)
            if i >= patients - 3:
                fixture.test_files.add(rel)
            lines.append(
                f"{name},{'|'.join(found)},{follow_up},{pid},{30 + i},{'MF'[i % 2]},PA,2500,2048,0.143,0.143"
            )
    bad = "images_001/images/00030001_000.png"
    _corrupt(root / bad)  # truncated PNG
    fixture.bad_files.add(bad)
    lines.append(
        f"{30001 + patients:08d}_000.png,No Finding,0,{30001 + patients},50,F,AP,2500,2048,0.143,0.143"
    )
    train.append(f"{30001 + patients:08d}_000.png")  # listed, never extracted
    fixture.bad_files.add(f"{30001 + patients:08d}_000.png")
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return fixture


def write_mimic(root: Path, subjects: int = 10, seed: int = 0) -> Fixture:
    """MIMIC-CXR-JPG 2.0.0: ``root/files/p10/p100000NN/sNNNNNNNN/<dicom_id>.jpg`` and the three label CSVs."""
    rng = np.random.default_rng(seed)
    fixture = Fixture(root=root, identifiers=[])
    labels, splits, meta = [], [], []
    for i in range(subjects):
        subject = 10000032 + 97 * i
        split = "test" if i >= subjects - 3 else "validate" if i == subjects - 4 else "train"
        fixture.identifiers += [str(subject), f"p{subject}"]
        for j in range(1 + i % 2):
            study = 50414267 + 1000 * i + j
            fixture.identifiers += [str(study), f"s{study}"]
            values = rng.choice(
                [1.0, 0.0, -1.0, np.nan], size=len(MIMIC_FINDINGS), p=[0.35, 0.35, 0.15, 0.15]
            )
            labels.append(
                {"subject_id": subject, "study_id": study, **dict(zip(MIMIC_FINDINGS, values, strict=True))}
            )
            for view, position in ((0, "PA"), (1, "LATERAL")):
                dicom = f"{rng.integers(16**8):08x}-{rng.integers(16**8):08x}-{rng.integers(16**8):08x}"
                fixture.identifiers.append(dicom)
                rel = f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg"
                _save(root / rel, radiograph(subject + j + view, 44, 36, float(values[3] == 1.0)))
                fixture.patients[rel] = str(subject)
                if split == "test":
                    fixture.test_files.add(rel)
                splits.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split})
                meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": position,
                             "Rows": 44, "Columns": 36, "StudyDate": 21800506, "StudyTime": 213014.531})  # fmt: skip
    bad = next(
        r for r, m in zip(fixture.patients, meta, strict=True) if m["ViewPosition"] == "PA"
    )  # a frontal view
    _corrupt(root / bad)
    fixture.bad_files.add(bad)
    pd.DataFrame(labels).to_csv(root / "mimic-cxr-2.0.0-chexpert.csv", index=False)
    pd.DataFrame(splits).to_csv(root / "mimic-cxr-2.0.0-split.csv", index=False)
    pd.DataFrame(meta).to_csv(root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    return fixture


def write_medmnist(root: Path, seed: int = 0, sizes: tuple[int, int, int] = (24, 8, 10)) -> Fixture:
    """``root/chestmnist.npz`` (14 binary labels) and ``root/organamnist.npz`` (11 classes), 28 × 28 uint8."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for stem, n_labels in (("chestmnist", 14), ("organamnist", 1)):
        arrays = {}
        for part, n in zip(("train", "val", "test"), sizes, strict=True):
            if n_labels == 1:
                labels = (np.arange(n) % 11).reshape(n, 1)
            else:
                labels = (rng.random((n, n_labels)) < 0.3).astype(np.uint8)
            images = np.stack(
                [radiograph(int(rng.integers(1 << 30)), 28, 28, float(lab[0] % 2)) for lab in labels]
            )
            arrays[f"{part}_images"], arrays[f"{part}_labels"] = images, labels
        np.savez_compressed(root / f"{stem}.npz", **arrays)
    return Fixture(root=root, identifiers=[])
