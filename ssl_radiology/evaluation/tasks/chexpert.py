"""CheXpert (Irvin et al. 2019): ``train.csv`` → train, ``valid.csv`` (radiologist-labelled) → test.

``Path`` in the CSVs starts with the release folder (``CheXpert-v1.0-small/train/patient00001/...``); ROOT
is that folder (or the one above it). Patient and study keys come from the patient / study folders
(:class:`ssl_radiology.data.identities.Chexpert`). Uncertain labels (-1) follow ``uncertain``
(:func:`~.base.uncertain_labels`); blanks are negative. Frontal views only by default.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pandas as pd

from ssl_radiology.data.identities import Chexpert
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.tasks.base import Task, age_band, sex_code
from ssl_radiology.evaluation.tasks.images import findings_task, prepare_images, relative_files
from ssl_radiology.evaluation.tasks.registry import register_task

COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
SPLITS = (("train.csv", "train"), ("valid.csv", "test"))


def release_root(root: str | Path) -> Path:
    """The folder holding ``train.csv``: ROOT itself or the one release folder below it."""
    path = Path(root).expanduser()
    if (path / "train.csv").is_file():
        return path
    below = sorted(p.parent for p in path.glob("*/train.csv"))
    if len(below) == 1:
        return below[0]
    raise UserError(f"{path}: no CheXpert train.csv here (expected the CheXpert-v1.0-small folder)")


def _relative(path: str) -> str:
    """``CheXpert-v1.0-small/train/...`` → ``train/...`` (relative to the release folder)."""
    parts = PurePosixPath(path).parts
    return (
        PurePosixPath(*parts[1:]).as_posix() if parts and parts[0] not in {"train", "valid", "test"} else path
    )


@register_task("chexpert", short_name=lambda path: "chexpert")
def chexpert_task(
    name: str,
    image_size: int,
    root: str,
    labels: list[str] | None = None,
    uncertain: str = "ignore",
    frontal_only: bool = True,
) -> Task:
    """The CheXpert task at ``image_size``; ``labels`` default to the five competition findings."""
    base = release_root(root)
    names = list(labels) if labels else COMPETITION
    frames, listed = [], set()
    for csv_name, tag in SPLITS:
        csv = base / csv_name
        if not csv.is_file():
            raise UserError(f"{csv}: CheXpert label file not found")
        frame = pd.read_csv(csv)
        missing = [c for c in ["Path", *names] if c not in frame.columns]
        if missing:
            raise UserError(f"{csv}: columns missing: {', '.join(missing)}")
        frame = frame.assign(rel=frame["Path"].map(_relative), _split=tag)
        listed |= set(frame["rel"])
        if frontal_only and "Frontal/Lateral" in frame.columns:
            frame = frame[frame["Frontal/Lateral"] == "Frontal"]
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    images = prepare_images(
        "chexpert", base, image_size, keep=table["rel"], identify=Chexpert().identify, modality="DX"
    )
    covered = {PurePosixPath(rel).parts[0] for rel in listed}
    unlabelled = [r for r in relative_files(base) if PurePosixPath(r).parts[0] in covered and r not in listed]
    columns = ["rel", "_split", *names, *[c for c in ("Sex", "Age") if c in table.columns]]
    return findings_task(
        name,
        images,
        table[columns],
        names,
        uncertain=uncertain,
        image_size=image_size,
        groups=_groups,
        info={"root": str(base)},
        unlabelled=unlabelled,
    )


def _groups(joined: pd.DataFrame) -> pd.DataFrame:
    """Site, sex and age band of each labelled image (CheXpert's own Sex / Age columns)."""
    n = len(joined)
    return pd.DataFrame(
        {
            "site": ["CheXpert"] * n,
            "sex": [sex_code(s) for s in joined.get("Sex", pd.Series(["unknown"] * n))],
            "age_band": [age_band(a) for a in joined.get("Age", pd.Series([None] * n))],
        }
    )
