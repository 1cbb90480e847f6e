"""``ROOT/<class>/<image>`` (hash split by patient) or ``ROOT/train|test/<class>/<image>`` (given split).

Without patient information each file is its own patient; ``patient_regex`` (first group) reads a patient
ID from the file name when the names carry one. The hash split is drawn from those raw IDs (in memory only),
so it is the same on every installation.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ssl_radiology.data.identities import FileNamePattern
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.tasks.base import Task, fingerprint, hash_split
from ssl_radiology.evaluation.tasks.images import prepare_images, relative_files
from ssl_radiology.evaluation.tasks.registry import register_task


@register_task("imagefolder", short_name=lambda path: f"imagefolder-{Path(path).expanduser().name}")
def imagefolder_task(
    name: str, image_size: int, root: str, patient_regex: str | None = None, test_fraction: float = 0.2
) -> Task:
    """An ImageFolder tree as a multi-class task."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise UserError(f"{base}: ImageFolder root not found")
    given = (base / "train").is_dir() and (base / "test").is_dir()
    depth = 2 if given else 1
    rels = [r for r in relative_files(base) if len(PurePosixPath(r).parts) == depth + 1]
    if given:
        rels = [r for r in rels if PurePosixPath(r).parts[0] in {"train", "test"}]
    class_names = sorted({PurePosixPath(r).parts[depth - 1] for r in rels})
    if not class_names:
        raise UserError(f"{base}: no class folders with image files")
    raw_ids = rels
    if patient_regex:
        pattern = re.compile(patient_regex)
        matches = [pattern.search(PurePosixPath(r).name) for r in rels]
        if any(m is None for m in matches):
            bad = next(r for r, m in zip(rels, matches, strict=True) if m is None)
            raise UserError(f"{bad}: file name does not match patient_regex {patient_regex!r}")
        raw_ids = [m.group(1) for m in matches if m is not None]
    table = pd.DataFrame(
        {
            "rel": rels,
            "label": [class_names.index(PurePosixPath(r).parts[depth - 1]) for r in rels],
            "_split": [PurePosixPath(r).parts[0] for r in rels]
            if given
            else hash_split(np.array(raw_ids), test_fraction),
        }
    )
    identify = FileNamePattern(patient_regex).identify if patient_regex else None
    images = prepare_images("imagefolder", base, image_size, keep=rels, identify=identify)
    joined, skipped = images.attach(table)
    n = len(joined)
    return Task(
        name=name,
        dataset=images.dataset(joined["row"]),
        labels=joined["label"].to_numpy(np.int64),
        kind="multiclass",
        class_names=class_names,
        patients=joined["patient_key"].to_numpy(str),
        groups=pd.DataFrame({"site": ["unknown"] * n, "sex": ["unknown"] * n, "age_band": ["unknown"] * n}),
        split=joined["_split"].to_numpy(str),
        fingerprint=fingerprint(name, images.digest, joined["file_key"].tolist(), image_size),
        info={"root": str(base), **({} if given else {"test_fraction": test_fraction})},
        skipped=skipped,
    )
