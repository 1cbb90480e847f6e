"""Adapters from labelled datasets to :class:`~ssl_radiology.evaluation.tasks.Task`.

* ``phantom``: the built-in corpus, prepared by the data module, joined with the phantom's label CSVs.
* ``medmnist``: one MedMNIST ``.npz`` (``train/val/test_images`` + ``_labels``; official splits; 8-bit images
  scaled to the uint16 range that prepared non-CT images use).
* ``chexpert``: ``train.csv`` (train) + ``valid.csv`` (test) + images. Uncertain labels (-1) follow
  ``uncertain``: ``"ignore"`` (default: masked out of the loss and AUROC, so no guessed label enters training
  or the score), ``"U-Ones"`` or ``"U-Zeros"`` (Irvin et al. 2019). Blank labels count as negative.
* ``nih``: ChestX-ray14 ``Data_Entry_2017*.csv`` with pipe-separated ``Finding Labels`` and the official
  patient-level ``train_val_list.txt`` / ``test_list.txt``.
* ``imagefolder``: ``ROOT/<class>/*`` (hash split) or ``ROOT/train|test/<class>/*`` (given split).

File-based images are read lazily; non-CT pixels are min-max stretched to 0..65535 like ``ssl-rad prepare``
so every task reaches the model through the same intensity path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.tasks import Task, fingerprint, hash_split

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
CHEXPERT_COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
NIH_FINDINGS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]  # fmt: skip


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """(1, H, W) -> (1, size, size), antialiased so downsampling does not alias fine structure."""
    if image.shape[-2:] == (size, size):
        return image
    return F.interpolate(
        image[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0]


def _stretch(pixels: np.ndarray) -> np.ndarray:
    """Per-image min-max stretch to 0..65535 (the prepared-dataset convention for non-CT images)."""
    pixels = pixels.astype(np.float32)
    low, high = float(pixels.min()), float(pixels.max())
    return (pixels - low) * (65535.0 / (high - low)) if high > low else np.zeros_like(pixels)


class ArrayImages(Dataset):
    """Images held in one array (N, H, W) of physical values."""

    def __init__(self, images: np.ndarray, modality: str, image_size: int) -> None:
        self.images, self.modality, self.image_size = images, modality, image_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = torch.from_numpy(np.asarray(self.images[i], dtype=np.float32))[None]
        return {"image": _resize(image, self.image_size), "index": i, "modality": self.modality}


class FileImages(Dataset):
    """One image file per item, decoded on access (PNG/JPEG/TIFF via Pillow, anything else via ``io``)."""

    def __init__(self, paths: list[Path], image_size: int) -> None:
        self.paths, self.image_size = paths, image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[i]
        if path.suffix.lower() in IMAGE_SUFFIXES:
            from PIL import Image

            try:
                with Image.open(path) as img:
                    pixels, modality = _stretch(np.asarray(img.convert("F"))), "OT"
            except OSError as exc:
                raise UserError(f"{path}: cannot read image ({exc})") from exc
        else:
            from ssl_radiology.io import read_slices

            first = read_slices(path)[0]
            modality = first.modality
            pixels = first.pixels if modality == "CT" else _stretch(first.pixels)
        image = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]
        return {"image": _resize(image, self.image_size), "index": i, "modality": modality}


def _unknown_groups(n: int, site: str = "unknown") -> pd.DataFrame:
    return pd.DataFrame({"site": [site] * n, "sex": ["unknown"] * n, "age_band": ["unknown"] * n})


def age_band(age: Any) -> str:
    """Ten-year band ("40-49") of an age in years; "unknown" when missing."""
    try:
        years = int(float(age))
    except (TypeError, ValueError):
        return "unknown"
    low = 10 * (years // 10)
    return f"{low}-{low + 9}"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise UserError(f"{path}: {what} not found")
    return path


# --- phantom ---------------------------------------------------------------------------------------------


def _phantom_labels(prepared: Path, csv_name: str) -> tuple[pd.DataFrame, Path]:
    """The phantom's label CSV and the raw phantom folder (``data.sources.phantom_raw_dir``)."""
    from ssl_radiology.data.sources import phantom_raw_dir

    raw = phantom_raw_dir(prepared)
    csv = _require(raw / "labels" / csv_name, "phantom label file")
    return pd.read_csv(csv), raw


def phantom_task(
    name: str,
    image_size: int,
    target: str,
    labels_csv: str,
    classes: list[str] | None = None,
    source: str = "phantom",
    modality: str | None = None,
    kind: str | None = None,
    test_fraction: float = 0.25,
) -> Task:
    """A phantom task: ``target`` is one CSV column (multiclass, or a binary ``kind: multilabel`` label)
    or a comma list of 0/1 columns (multilabel)."""
    from ssl_radiology.data.prepared import PreparedDataset
    from ssl_radiology.data.sources import resolve_source

    prepared = resolve_source(source)
    labels, raw = _phantom_labels(prepared, labels_csv)
    meta = json.loads((prepared / "prepared.json").read_text())
    manifest = PreparedDataset(prepared).manifest.reset_index(drop=True)
    roots = [Path(s).resolve() for s in meta["sources"]]
    absolute = [
        (roots[int(r)] / s).resolve().relative_to(raw.resolve()).as_posix()
        for r, s in zip(manifest["root"], manifest["source"], strict=True)
    ]
    keyed = pd.DataFrame(
        {"row": np.arange(len(manifest)), "source": absolute, "slice_index": manifest["slice_index"]}
    )
    if modality is not None:
        keyed = keyed[manifest["modality"].to_numpy() == modality]
    joined = keyed.merge(labels, on=["source", "slice_index"], how="inner", validate="one_to_one")
    if joined.empty:
        raise UserError(f"{prepared}: no prepared image matches a row of {raw / 'labels' / labels_csv}")
    joined = joined.sort_values("row").reset_index(drop=True)
    columns = [c.strip() for c in target.split(",")]
    missing = [c for c in columns if c not in joined.columns]
    if missing:
        raise UserError(f"{raw / 'labels' / labels_csv}: no column {', '.join(missing)}")
    if len(columns) == 1 and kind != "multilabel":
        values = joined[columns[0]].astype(str)
        class_names = list(classes) if classes else sorted(values.unique())
        unknown = sorted(set(values) - set(class_names))
        if unknown:
            raise UserError(
                f"{labels_csv}: values {unknown} of '{columns[0]}' are not in classes {class_names}"
            )
        y = values.map({c: i for i, c in enumerate(class_names)}).to_numpy(np.int64)
        kind = "multiclass"
    else:
        y, class_names, kind = joined[columns].to_numpy(np.float32), columns, "multilabel"
    patients = joined["case"].astype(str).to_numpy()
    return Task(
        name=name,
        dataset=PreparedDataset(prepared, indices=joined["row"].to_numpy()),
        labels=y,
        kind=kind,
        class_names=class_names,
        patients=patients,
        groups=joined[["site", "sex", "age_band"]].astype(str).reset_index(drop=True),
        split=hash_split(patients, test_fraction),
        fingerprint=fingerprint(name, meta, joined["row"].tolist(), image_size),
        info={
            "prepared": str(prepared),
            "labels": str(raw / "labels" / labels_csv),
            "test_fraction": test_fraction,
        },
    )


# --- MedMNIST ----------------------------------------------------------------------------------------------


def medmnist_task(
    name: str, image_size: int, root: str, kind: str | None = None, classes: list[str] | None = None
) -> Task:
    """One MedMNIST ``.npz``; multilabel when the label array has several columns (ChestMNIST)."""
    path = _require(Path(root).expanduser(), "MedMNIST .npz file")
    try:
        data = np.load(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz ({exc})") from exc
    images, labels, split = [], [], []
    for part, tag in (("train", "train"), ("val", "val"), ("test", "test")):
        for key in (f"{part}_images", f"{part}_labels"):
            if key not in data:
                raise UserError(f"{path}: array '{key}' missing (has {', '.join(data.files)})")
        imgs, labs = data[f"{part}_images"], data[f"{part}_labels"]
        if len(imgs) != len(labs):
            raise UserError(f"{path}: {len(imgs)} {part}_images but {len(labs)} {part}_labels")
        images.append(
            imgs.mean(axis=-1) if imgs.ndim == 4 else imgs
        )  # RGB sets (PathMNIST, ...): channel mean
        labels.append(labs.reshape(len(labs), -1))
        split += [tag] * len(imgs)
    image_array = np.concatenate(images).astype(np.float32) * (65535.0 / 255.0)
    label_array = np.concatenate(labels)
    kind = kind or ("multilabel" if label_array.shape[1] > 1 else "multiclass")
    if kind == "multiclass":
        y = label_array[:, 0].astype(np.int64)
        class_names = list(classes) if classes else [str(c) for c in range(int(y.max()) + 1)]
    else:
        y = label_array.astype(np.float32)
        class_names = list(classes) if classes else [str(c) for c in range(y.shape[1])]
    n = len(y)
    return Task(
        name=name,
        dataset=ArrayImages(image_array, "OT", image_size),
        labels=y,
        kind=kind,
        class_names=class_names,
        patients=np.array([f"img{i}" for i in range(n)]),  # official splits are already patient-level
        groups=_unknown_groups(n, "medmnist"),
        split=np.array(split),
        fingerprint=fingerprint(
            name, str(path.resolve()), path.stat().st_size, path.stat().st_mtime, image_size
        ),
        info={"file": str(path)},
    )


# --- CheXpert ----------------------------------------------------------------------------------------------


def _resolve_image(root: Path, relative: str) -> Path:
    """CheXpert paths start with the release folder (``CheXpert-v1.0-small/...``); accept ROOT at or above it."""
    rel = Path(relative)
    for candidate in (root / rel, root.parent / rel, root / Path(*rel.parts[1:])):
        if candidate.is_file():
            return candidate
    raise UserError(f"{root}: image {relative} listed in the CSV does not exist")


def chexpert_task(
    name: str,
    image_size: int,
    root: str,
    labels: list[str] | None = None,
    uncertain: str = "ignore",
    frontal_only: bool = True,
) -> Task:
    """CheXpert: ``train.csv`` -> train, ``valid.csv`` (radiologist-labelled) -> test."""
    policies = {"ignore", "U-Ones", "U-Zeros"}
    if uncertain not in policies:
        raise UserError(
            f"CheXpert uncertain-label policy '{uncertain}' unknown; use one of {sorted(policies)}"
        )
    root_path = Path(root).expanduser()
    names = list(labels) if labels else CHEXPERT_COMPETITION
    frames = []
    for csv_name, tag in (("train.csv", "train"), ("valid.csv", "test")):
        frame = pd.read_csv(_require(root_path / csv_name, "CheXpert CSV"))
        missing = [c for c in ["Path", *names] if c not in frame.columns]
        if missing:
            raise UserError(f"{root_path / csv_name}: columns missing: {', '.join(missing)}")
        if frontal_only and "Frontal/Lateral" in frame.columns:
            frame = frame[frame["Frontal/Lateral"] == "Frontal"]
        frames.append(frame.assign(_split=tag))
    table = pd.concat(frames, ignore_index=True)
    raw = table[names].to_numpy(np.float32)
    raw = np.nan_to_num(raw, nan=0.0)
    mask = raw != -1 if uncertain == "ignore" else np.ones_like(raw, bool)
    y = np.where(raw == -1, 1.0 if uncertain == "U-Ones" else 0.0, raw).astype(np.float32)
    patients = table["Path"].str.extract(r"(patient\d+)", expand=False).fillna(table["Path"]).to_numpy()
    paths = [_resolve_image(root_path, p) for p in table["Path"]]
    groups = pd.DataFrame(
        {
            "site": ["CheXpert"] * len(table),
            "sex": table.get("Sex", pd.Series(["unknown"] * len(table))).astype(str).str[:1].to_numpy(),
            "age_band": [age_band(a) for a in table.get("Age", pd.Series([None] * len(table)))],
        }
    )
    return Task(
        name=name,
        dataset=FileImages(paths, image_size),
        labels=y,
        kind="multilabel",
        class_names=names,
        patients=patients.astype(str),
        groups=groups,
        split=table["_split"].to_numpy(),
        fingerprint=fingerprint(
            name, str(root_path.resolve()), table["Path"].tolist(), uncertain, image_size
        ),
        label_mask=mask if uncertain == "ignore" else None,
        info={"root": str(root_path), "uncertain": uncertain},
    )


# --- NIH ChestX-ray14 --------------------------------------------------------------------------------------


def nih_task(name: str, image_size: int, root: str, labels: list[str] | None = None) -> Task:
    """NIH ChestX-ray14 with its official patient-level train_val / test lists."""
    root_path = Path(root).expanduser()
    entries = sorted(root_path.glob("Data_Entry_2017*.csv"))
    if not entries:
        raise UserError(f"{root_path}: Data_Entry_2017.csv not found")
    table = pd.read_csv(entries[0])
    test_names = set(_require(root_path / "test_list.txt", "official test list").read_text().split())
    train_names = set(_require(root_path / "train_val_list.txt", "official train list").read_text().split())
    table = table[table["Image Index"].isin(test_names | train_names)].reset_index(drop=True)
    names = list(labels) if labels else NIH_FINDINGS
    findings = table["Finding Labels"].astype(str).str.split("|")
    y = np.array([[float(n in f) for n in names] for f in findings], dtype=np.float32).reshape(
        len(table), len(names)
    )
    files = {p.name: p for p in root_path.rglob("*.png")}
    missing = [n for n in table["Image Index"] if n not in files]
    if missing:
        raise UserError(f"{root_path}: {len(missing)} listed images not found, e.g. {missing[0]}")
    groups = pd.DataFrame(
        {
            "site": ["NIH"] * len(table),
            "sex": table.get("Patient Gender", pd.Series(["unknown"] * len(table))).astype(str).to_numpy(),
            "age_band": [age_band(a) for a in table.get("Patient Age", pd.Series([None] * len(table)))],
        }
    )
    return Task(
        name=name,
        dataset=FileImages([files[n] for n in table["Image Index"]], image_size),
        labels=y,
        kind="multilabel",
        class_names=names,
        patients=table["Patient ID"].astype(str).to_numpy(),
        groups=groups,
        split=np.where(table["Image Index"].isin(test_names), "test", "train"),
        fingerprint=fingerprint(name, str(root_path.resolve()), table["Image Index"].tolist(), image_size),
        info={"root": str(root_path)},
    )


# --- ImageFolder -------------------------------------------------------------------------------------------


def imagefolder_task(
    name: str, image_size: int, root: str, patient_regex: str | None = None, test_fraction: float = 0.2
) -> Task:
    """``ROOT/<class>/<image>``, or ``ROOT/train/<class>/...`` + ``ROOT/test/<class>/...``.

    Without patient information each file is its own patient; ``patient_regex`` (first group) extracts a
    patient key from the file name when the names carry one.
    """
    root_path = _require(Path(root).expanduser(), "ImageFolder root")
    given = (root_path / "train").is_dir() and (root_path / "test").is_dir()
    parts = [("train", root_path / "train"), ("test", root_path / "test")] if given else [("", root_path)]
    class_names = sorted({d.name for _, base in parts for d in base.iterdir() if d.is_dir()})
    if not class_names:
        raise UserError(f"{root_path}: no class folders")
    paths, y, split = [], [], []
    for tag, base in parts:
        for c, cls in enumerate(class_names):
            files = sorted(p for p in (base / cls).glob("*") if p.is_file()) if (base / cls).is_dir() else []
            paths += files
            y += [c] * len(files)
            split += [tag] * len(files)
    if not paths:
        raise UserError(f"{root_path}: no image files in the class folders")
    if patient_regex:
        pattern = re.compile(patient_regex)
        matches = [pattern.search(p.name) for p in paths]
        bad = [p for p, m in zip(paths, matches, strict=True) if m is None]
        if bad:
            raise UserError(f"{bad[0]}: file name does not match patient_regex {patient_regex!r}")
        patients = np.array([m.group(1) for m in matches if m is not None])
    else:
        patients = np.array([p.relative_to(root_path).as_posix() for p in paths])
    split_array = np.array(split) if given else hash_split(patients, test_fraction)
    return Task(
        name=name,
        dataset=FileImages(paths, image_size),
        labels=np.array(y, dtype=np.int64),
        kind="multiclass",
        class_names=class_names,
        patients=patients,
        groups=_unknown_groups(len(paths)),
        split=split_array,
        fingerprint=fingerprint(
            name, [p.as_posix() for p in paths], [p.stat().st_size for p in paths], image_size
        ),
        info={"root": str(root_path), **({} if given else {"test_fraction": test_fraction})},
    )
