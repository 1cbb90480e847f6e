"""NIH ChestX-ray14 (Wang et al. 2017): 14 findings, official patient-level ``train_val_list`` / ``test_list``.

Labels come from ``Data_Entry_2017_v2020.csv`` (or the original ``Data_Entry_2017.csv``): pipe-separated
``Finding Labels``, ``No Finding`` for none. Patient keys come from its ``Patient ID`` column, keyed exactly
as the file names are keyed when the folder is prepared for pre-training (:class:`~ssl_radiology.data.
identities.Nih`), so the leakage guard can compare them.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ssl_radiology.data import keys
from ssl_radiology.data.identities import Nih
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.tasks.base import Task, age_band, fingerprint, sex_code
from ssl_radiology.evaluation.tasks.images import prepare_images, relative_files
from ssl_radiology.evaluation.tasks.registry import register_task

FINDINGS = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]  # fmt: skip


def _names(path: Path) -> set[str]:
    if not path.is_file():
        raise UserError(f"{path}: official ChestX-ray14 list not found")
    return set(path.read_text().split())


@register_task("nih", short_name=lambda path: "nih-cxr14")
def nih_task(name: str, image_size: int, root: str, labels: list[str] | None = None) -> Task:
    """The ChestX-ray14 task at ``image_size``; ``labels`` default to the 14 findings."""
    base = Path(root).expanduser()
    entries = sorted(base.glob("Data_Entry_2017*.csv"))
    if not entries:
        raise UserError(f"{base}: Data_Entry_2017_v2020.csv not found")
    table = pd.read_csv(entries[-1])  # the v2020 revision sorts after the original
    missing = [c for c in ("Image Index", "Finding Labels", "Patient ID") if c not in table.columns]
    if missing:
        raise UserError(f"{entries[-1]}: columns missing: {', '.join(missing)}")
    test_names, train_names = _names(base / "test_list.txt"), _names(base / "train_val_list.txt")
    table = table[table["Image Index"].isin(test_names | train_names)].reset_index(drop=True)
    names = list(labels) if labels else FINDINGS
    files = {PurePosixPath(rel).name: rel for rel in relative_files(base) if rel.lower().endswith(".png")}
    table["rel"] = [files.get(n, n) for n in table["Image Index"]]
    findings = table["Finding Labels"].astype(str).str.split("|")
    table[names] = np.array([[float(n in f) for n in names] for f in findings], np.float32).reshape(
        len(table), -1
    )
    table["_split"] = np.where(table["Image Index"].isin(test_names), "test", "train")
    images = prepare_images(
        "nih",
        base,
        image_size,
        keep=[files[n] for n in table["Image Index"] if n in files],
        identify=Nih().identify,
        modality="DX",
    )
    columns = [
        "rel",
        "_split",
        "Patient ID",
        *names,
        *[c for c in ("Patient Gender", "Patient Age") if c in table],
    ]
    joined, skipped = images.attach(table[columns])
    listed = set(table["Image Index"])
    unlabelled = images.unlabelled(rel for n, rel in files.items() if n not in listed)
    n = len(joined)
    return Task(
        name=name,
        dataset=images.dataset(joined["row"]),
        labels=joined[names].to_numpy(np.float32),
        kind="multilabel",
        class_names=names,
        patients=np.array([keys.patient_key(f"nih/{int(p)}", images.secret) for p in joined["Patient ID"]]),
        groups=pd.DataFrame(
            {
                "site": ["NIH"] * n,
                "sex": [sex_code(s) for s in joined.get("Patient Gender", pd.Series(["unknown"] * n))],
                "age_band": [age_band(a) for a in joined.get("Patient Age", pd.Series([None] * n))],
            }
        ),
        split=joined["_split"].to_numpy(str),
        fingerprint=fingerprint(name, images.digest, joined["file_key"].tolist(), names, image_size),
        info={"root": str(base)},
        skipped=pd.concat([skipped, unlabelled], ignore_index=True),
    )
