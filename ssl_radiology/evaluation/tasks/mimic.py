"""MIMIC-CXR-JPG (Johnson et al. 2019) with its CheXpert-labeller findings, when the label file is present.

ROOT is the version folder holding ``files/`` and ``mimic-cxr-2.0.0-chexpert.csv(.gz)`` (labels per study),
optionally ``-split.csv(.gz)`` (official train / validate / test per ``dicom_id``; without it a hash split
by subject) and ``-metadata.csv(.gz)`` (``ViewPosition``, for frontal views only). Patient and study keys
come from the ``p<subject_id>`` / ``s<study_id>`` folders (:class:`~ssl_radiology.data.identities.Mimic`).
Uncertain labels follow ``uncertain`` (:func:`~.base.uncertain_labels`).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ssl_radiology.data.identities import Mimic, mimic_table
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.splits import fixed_test_split
from ssl_radiology.evaluation.tasks.base import Task
from ssl_radiology.evaluation.tasks.images import findings_task, prepare_images, relative_files
from ssl_radiology.evaluation.tasks.registry import register_task

COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
FRONTAL = {"PA", "AP"}
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}


@register_task("mimic", short_name=lambda path: "mimic-cxr")
def mimic_task(
    name: str,
    image_size: int,
    root: str,
    labels: list[str] | None = None,
    uncertain: str = "ignore",
    frontal_only: bool = True,
    test_fraction: float = 0.2,
) -> Task:
    """The MIMIC-CXR label task at ``image_size``; ``labels`` default to the five CheXpert competition findings."""
    base = Path(root).expanduser()
    base = base.parent if base.name == "files" else base
    chexpert = mimic_table(base, "chexpert")
    if chexpert is None:
        raise UserError(
            f"{base}: mimic-cxr-2.0.0-chexpert.csv(.gz) not found; the MIMIC-CXR task needs its labels"
        )
    names = list(labels) if labels else COMPETITION
    missing = [c for c in ["subject_id", "study_id", *names] if c not in chexpert.columns]
    if missing:
        raise UserError(f"{base}: mimic-cxr-2.0.0-chexpert.csv lacks columns {', '.join(missing)}")
    files = pd.DataFrame({"rel": [r for r in relative_files(base) if r.startswith("files/")]})
    ids = [Mimic().identify(rel) for rel in files["rel"]]
    files["subject_id"] = [int(p.split("/")[1]) if p else -1 for p, _ in ids]
    files["study_id"] = [int(s.split("/")[1]) if s else -1 for _, s in ids]
    files["dicom_id"] = [PurePosixPath(rel).name.split(".")[0] for rel in files["rel"]]
    metadata = mimic_table(base, "metadata")
    if frontal_only and metadata is not None:
        frontal = set(metadata.loc[metadata["ViewPosition"].isin(FRONTAL), "dicom_id"].astype(str))
        files = files[files["dicom_id"].isin(frontal)]
    table = files.merge(
        chexpert[["subject_id", "study_id", *names]],
        on=["subject_id", "study_id"],
        how="left",
        indicator=True,
    )
    unlabelled = table.loc[table["_merge"] == "left_only", "rel"]
    table = table[table["_merge"] == "both"].drop(columns="_merge").reset_index(drop=True)
    official = mimic_table(base, "split")
    by_hash = np.where(
        fixed_test_split(table["subject_id"].astype(str).to_numpy(), test_fraction), "test", "train"
    )
    if official is not None:
        split_of = dict(
            zip(official["dicom_id"].astype(str), official["split"].map(SPLIT_NAMES), strict=True)
        )
        table["_split"] = [split_of.get(d) or h for d, h in zip(table["dicom_id"], by_hash, strict=True)]
    else:
        table["_split"] = by_hash
    images = prepare_images(
        "mimic", base, image_size, keep=table["rel"], identify=Mimic().identify, modality="DX"
    )
    return findings_task(
        name,
        images,
        table[["rel", "_split", *names]],
        names,
        uncertain=uncertain,
        image_size=image_size,
        groups=_groups,
        info={"root": str(base), "official_split": official is not None},
        unlabelled=unlabelled,
    )


def _groups(joined: pd.DataFrame) -> pd.DataFrame:
    """MIMIC-CXR-JPG carries no sex or age (they live in MIMIC-IV): one site, the rest unknown."""
    n = len(joined)
    return pd.DataFrame({"site": ["MIMIC"] * n, "sex": ["unknown"] * n, "age_band": ["unknown"] * n})
