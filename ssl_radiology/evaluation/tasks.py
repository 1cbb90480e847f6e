"""Labelled downstream tasks: images, labels, patients, subgroup attributes and the fixed split.

``load_task(name, image_size)`` accepts the built-in phantom tasks (``phantom-ct``, ``phantom-ct-nodule``,
``phantom-xray``), a task YAML under ``configs/eval/tasks/`` or a path to one, and the ``adapter:path`` short
forms ``medmnist:FILE.npz``, ``chexpert:ROOT``, ``nih:ROOT`` and ``imagefolder:ROOT`` (see ``adapters``).

Every task carries a patient key per image so that splits are patient-level, and a ``split`` column fixed
before any seed is drawn: official splits where the dataset has them (MedMNIST, CheXpert, NIH, ImageFolder
``train/``+``test/``), otherwise a salted hash of the patient key (``splits.fixed_test_split``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.splits import fixed_test_split


@dataclass
class Task:
    """One labelled dataset ready for evaluation (rows of every array are aligned with ``dataset``)."""

    name: str
    dataset: Any  # map-style: ds[i] -> {"image": FloatTensor(1, S, S) physical values, "modality": str, ...}
    labels: np.ndarray  # (N,) int class index, or (N, L) 0/1
    kind: str  # "multiclass" | "multilabel"
    class_names: list[str]
    patients: np.ndarray  # (N,) str patient keys
    groups: pd.DataFrame  # columns site, sex, age_band (N rows)
    split: np.ndarray  # (N,) "train" | "test" | "ood"; also "val" (official validation split, MedMNIST)
    # and "excluded" (other-site images of patients held out with --ood-split)
    fingerprint: str  # identifies the images (feature cache key)
    label_mask: np.ndarray | None = None  # (N, L) False where a label is unknown (CheXpert "ignore")
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.dataset)
        for attr in ("labels", "patients", "split"):
            if len(getattr(self, attr)) != n:
                raise UserError(
                    f"task {self.name}: {len(getattr(self, attr))} {attr} for {n} images; labels must match images"
                )
        if len(self.groups) != n:
            raise UserError(f"task {self.name}: {len(self.groups)} subgroup rows for {n} images")

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


def fingerprint(*parts: Any) -> str:
    """Short content id of the things that define a task's images."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def hash_split(patients: np.ndarray, test_fraction: float) -> np.ndarray:
    """The seed-independent train/test split used when a dataset has no official one."""
    return np.where(fixed_test_split(patients, test_fraction), "test", "train")


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


def load_task(name: str, image_size: int, ood_site: str | None = None, **options: Any) -> Task:
    """Resolve a task name / YAML / ``adapter:path`` into a :class:`Task` at ``image_size`` pixels."""
    from ssl_radiology.evaluation import adapters

    spec = _task_spec(name)
    spec.update({k: v for k, v in options.items() if v is not None})
    adapter = spec.pop("adapter")
    builders = {
        "phantom": adapters.phantom_task,
        "medmnist": adapters.medmnist_task,
        "chexpert": adapters.chexpert_task,
        "nih": adapters.nih_task,
        "imagefolder": adapters.imagefolder_task,
    }
    if adapter not in builders:
        raise UserError(f"task {name}: unknown adapter '{adapter}' (known: {', '.join(builders)})")
    task = builders[adapter](name=spec.pop("name", name), image_size=image_size, **spec)
    return hold_out_site(task, ood_site) if ood_site is not None else task


def _task_spec(name: str) -> dict[str, Any]:
    """Task settings from the ``adapter:path`` form, a YAML path, or ``configs/eval/tasks/<name>.yaml``."""
    from ssl_radiology.config import config_root

    adapter, sep, path = name.partition(":")
    if sep and adapter in {"medmnist", "chexpert", "nih", "imagefolder"}:
        return {"adapter": adapter, "root": path, "name": f"{adapter}-{Path(path).stem}"}
    candidate = Path(name)
    if candidate.suffix not in {".yaml", ".yml"}:
        candidate = config_root() / "eval" / "tasks" / f"{name}.yaml"
    if not candidate.is_file():
        folder = config_root() / "eval" / "tasks"
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) if folder.is_dir() else "none"
        raise UserError(
            f"unknown task '{name}' (no {candidate}); known tasks: {known}; or use medmnist:FILE.npz, "
            "chexpert:ROOT, nih:ROOT, imagefolder:ROOT"
        )
    spec = OmegaConf.to_container(OmegaConf.load(candidate), resolve=True)
    if not isinstance(spec, dict) or "adapter" not in spec:
        raise UserError(f"{candidate}: a task YAML needs an 'adapter' key")
    spec.setdefault("name", candidate.stem)
    return spec
