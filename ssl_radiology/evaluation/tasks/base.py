"""The :class:`Task` every evaluation protocol consumes, and what all adapters share to build one.

A task is a prepared dataset (the very format and pixels pre-training reads, see :mod:`.images`) plus aligned
arrays: labels, the uncertain-label mask, pseudonymous patient keys (splits are by patient), subgroup
attributes, and a ``split`` fixed before any seed is drawn: the dataset's official split where it has one,
otherwise a salted hash of the patient key (``splits.fixed_test_split``).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.splits import fixed_test_split

UNCERTAIN_POLICIES = ("ignore", "U-Ones", "U-Zeros")
SKIPPED_COLUMNS = ["file_key", "reason"]


def no_skipped() -> pd.DataFrame:
    return pd.DataFrame(columns=SKIPPED_COLUMNS)


@dataclass
class Task:
    """One labelled dataset ready for evaluation (rows of every array are aligned with ``dataset``)."""

    name: str
    dataset: Any  # map-style: ds[i] -> {"image": FloatTensor(1, S, S) physical values, "modality": str, ...}
    labels: np.ndarray  # (N,) int class index, or (N, L) 0/1
    kind: str  # "multiclass" | "multilabel"
    class_names: list[str]
    patients: np.ndarray  # (N,) str patient keys (pseudonymous: keys.patient_key of the dataset's own IDs)
    groups: pd.DataFrame  # columns site, sex, age_band (N rows)
    split: np.ndarray  # (N,) "train" | "test" | "ood"; also "val" (official validation split, MedMNIST)
    # and "excluded" (other-site images of patients held out with --ood-split)
    fingerprint: str  # identifies the images (feature cache key)
    label_mask: np.ndarray | None = None  # (N, L) False where a label is unknown (uncertain policy "ignore")
    info: dict[str, Any] = field(default_factory=dict)
    skipped: pd.DataFrame = field(
        default_factory=no_skipped
    )  # file_key, reason: images the task could not use

    def __post_init__(self) -> None:
        n = len(self.dataset)
        for attr in ("labels", "patients", "split"):
            if len(getattr(self, attr)) != n:
                raise UserError(
                    f"task {self.name}: {len(getattr(self, attr))} {attr} for {n} images; labels must match images"
                )
        if len(self.groups) != n:
            raise UserError(f"task {self.name}: {len(self.groups)} subgroup rows for {n} images")
        if n == 0:
            raise UserError(f"task {self.name}: no usable images ({len(self.skipped)} skipped)")

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


def save_skipped(task: Task, folder: str | Path) -> str | None:
    """Write the images ``task`` could not use to ``<folder>/skipped-<task>.csv`` (``file_key``, ``reason``: no
    path, since paths can name patients) and return a one-line summary for the end of a run (None if none)."""
    if task.skipped.empty:
        return None
    path = Path(folder) / f"skipped-{task.name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    task.skipped.to_csv(path, index=False)
    counts = Counter(task.skipped["reason"]).most_common(3)
    reasons = "; ".join(f"{n} × {reason}" for reason, n in counts)
    more = ", ..." if len(set(task.skipped["reason"])) > 3 else ""
    return f"task {task.name}: {len(task.skipped)} images skipped ({reasons}{more}); file keys in {path}"


def fingerprint(*parts: Any) -> str:
    """Short content id of the things that define a task's images."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hash_split(patients: np.ndarray, test_fraction: float, strata: np.ndarray | None = None) -> np.ndarray:
    """The seed-independent train/test split used when a dataset has no official one (``strata``: one value
    per row, e.g. site × sex, for a split that gives every stratum its share of test patients)."""
    return np.where(fixed_test_split(patients, test_fraction, strata=strata), "test", "train")


def age_band(age: Any) -> str:
    """Ten-year band ("40-49") of an age in years; "unknown" when missing."""
    try:
        years = int(float(age))
    except (TypeError, ValueError):
        return "unknown"
    low = 10 * (years // 10)
    return f"{low}-{low + 9}"


def sex_code(value: Any) -> str:
    """ "M" / "F" from ``Male``/``M``/``Female``/``F`` (any case); "unknown" otherwise."""
    text = str(value).strip().upper()[:1]
    return text if text in {"M", "F"} else "unknown"


def uncertain_labels(raw: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray | None]:
    """CheXpert-style labels (1, 0, -1 uncertain, NaN blank) → (0/1 labels, mask or None).

    ``"ignore"`` keeps uncertain entries out of every loss, kNN vote and metric through the mask (their label
    value, 0, is never read); ``"U-Ones"`` / ``"U-Zeros"`` map them to 1 / 0 (Irvin et al. 2019). Blank
    (not mentioned) counts as negative, as in the CheXpert and MIMIC-CXR papers.
    """
    if policy not in UNCERTAIN_POLICIES:
        raise UserError(
            f"uncertain-label policy '{policy}' unknown; use one of {', '.join(UNCERTAIN_POLICIES)}"
        )
    raw = np.nan_to_num(np.asarray(raw, np.float32), nan=0.0)
    y = np.where(raw == -1, 1.0 if policy == "U-Ones" else 0.0, raw).astype(np.float32)
    return y, (raw != -1) if policy == "ignore" else None


def hold_out_site(task: Task, site: str) -> Task:
    """Move every image of acquisition ``site`` (train or test) to the ``ood`` split.

    Patients seen at the held-out site are excluded from train and test too, so no patient spans the
    in-distribution and the out-of-distribution sets. A hash-based test split (no official one) is drawn
    again among the remaining patients, so the in-distribution test set keeps its share.
    """
    sites = task.groups["site"].astype(str).to_numpy()
    is_ood = sites == str(site)
    if not is_ood.any():
        known = ", ".join(sorted(set(sites)))
        raise UserError(f"task {task.name}: no images from site '{site}' to hold out (sites: {known})")
    ood_patients = np.unique(task.patients[is_ood])
    split = task.split.copy()
    remaining = ~np.isin(task.patients, ood_patients)
    if "test_fraction" in task.info and len(np.unique(task.patients[remaining])) >= 2:
        split[remaining] = hash_split(task.patients[remaining], float(task.info["test_fraction"]))
    split[~remaining] = "excluded"
    split[is_ood] = "ood"
    for needed in ("train", "test"):
        if not (split == needed).any():
            raise UserError(f"task {task.name}: holding out site '{site}' leaves no {needed} images")
    return replace(task, split=split, info={**task.info, "ood_site": str(site)})
