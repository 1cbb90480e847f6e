"""Supervised pre-training on a labelled source (the designs of Cherti & Jitsev 2022 and Mustafa et al. 2021).

The labels come from an evaluation task (``ssl_radiology.evaluation.tasks.load_task``: CheXpert, NIH, MIMIC,
MedMNIST, the phantom tasks, a task YAML): ``--data`` names the task, and only the images of the task's
**train split** are used, so a later evaluation on the same task's test patients stays leak-free (the run's
``pretrain_patients.json`` lists exactly those train patients). ``train.fraction`` keeps a seeded share of
the train *patients* (nested across fractions, as for the self-supervised sources) for scaling studies.

Loss: cross-entropy for a multi-class task; binary cross-entropy per finding for a multi-label task, where
entries the task marks unknown (CheXpert's ``uncertain: ignore`` policy, ``label_mask``) drop out of the
loss; ``U-Ones`` / ``U-Zeros`` are resolved by the task itself (``method.uncertain`` is passed to it).

Everything else is the self-supervised path: multi-crop loader with one global view, device augmentation,
DDP, per-step seeds and exact resume (``SSLMethod``); the export is the backbone, the head is dropped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ssl_radiology.errors import UserError
from ssl_radiology.methods import register_method
from ssl_radiology.methods.base import SSLMethod, embedding_spread
from ssl_radiology.methods.settings import Float, OneOf, Rule, Text, check_views


@functools.lru_cache(maxsize=4)
def load_training_task(name: str, image_size: int, uncertain: str | None) -> Any:
    """The labelled task (cached: the data path and the module both need it in one process)."""
    from ssl_radiology.evaluation.tasks import load_task

    try:
        task = load_task(name, image_size, **({"uncertain": uncertain} if uncertain else {}))
    except UserError as exc:
        raise UserError(f"--data {name}: supervised pre-training needs a labelled task; {exc}") from exc
    if not len(task.indices("train")):
        raise UserError(f"task {task.name}: no images in its train split to pre-train on")
    return task


def train_rows(task: Any, fraction: float, seed: int) -> np.ndarray:
    """Rows of the task's train split, cut to a seeded ``fraction`` of its patients (nested across fractions)."""
    rows = task.indices("train")
    if fraction >= 1.0:
        return rows
    patients = np.sort(np.unique(task.patients[rows].astype(str)))
    order = np.random.default_rng(seed).permutation(len(patients))
    keep = set(patients[order[: max(1, round(fraction * len(patients)))]])
    return rows[np.isin(task.patients[rows].astype(str), list(keep))]


@dataclass
class LabelledImages(Dataset):
    """Task images with their labels: item ``i`` → the task dataset's item plus ``label`` / ``label_mask``.

    ``manifest`` (one ``patient_key`` per row) is what the run's provenance record reads.
    """

    dataset: Any
    rows: np.ndarray
    labels: np.ndarray
    label_mask: np.ndarray
    patients: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[int(self.rows[index])])
        item["label"] = torch.as_tensor(self.labels[index])
        item["label_mask"] = torch.as_tensor(self.label_mask[index])
        return item

    @property
    def manifest(self) -> pd.DataFrame:
        return pd.DataFrame({"patient_key": self.patients.astype(str)})


def labelled_source(settings: dict[str, Any], fraction: float, seed: int) -> LabelledImages:
    task = load_training_task(str(settings["task"]), int(settings["image_size"]), settings.get("uncertain"))
    rows = train_rows(task, fraction, seed)
    labels = task.labels[rows]
    mask = np.ones(labels.shape, bool) if task.label_mask is None else task.label_mask[rows].astype(bool)
    return LabelledImages(task.dataset, rows, labels, mask, task.patients[rows])


def chance_loss(task: Any) -> float:
    """Loss of a model that predicts the train-split label prior: the entropy of the class frequencies (CE)
    or the mean binary entropy of the finding prevalences (BCE). Lower means the model learnt something."""
    labels = task.labels[task.indices("train")]
    if task.kind == "multiclass":
        p = np.bincount(labels.astype(int), minlength=len(task.class_names)) / len(labels)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())
    mask = np.ones(labels.shape, bool) if task.label_mask is None else task.label_mask[task.indices("train")]
    prevalence = np.clip((labels * mask).sum(0) / np.maximum(mask.sum(0), 1), 1e-6, 1 - 1e-6)
    entropy = -(prevalence * np.log(prevalence) + (1 - prevalence) * np.log(1 - prevalence))
    return float(entropy.mean())


@register_method("supervised")
class Supervised(SSLMethod):
    """Backbone + linear classifier trained on a task's labels; the backbone is exported."""

    backbone_prefix = "backbone."
    schema: ClassVar[dict[str, Rule]] = {
        **SSLMethod.schema,
        "task": Text(),
        "uncertain": OneOf("ignore", "U-Ones", "U-Zeros", optional=True),
        "label_smoothing": Float(low=0.0, high=1.0, high_open=True),
    }

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        super().check_settings(settings)
        check_views(settings, n_global=(1, 1), n_local=(0, 0))

    @classmethod
    def training_sources(cls, settings: dict[str, Any], train: dict[str, Any], seed: int) -> list[Dataset]:
        """The task's train split instead of prepared sources: ``--data`` names exactly one labelled task."""
        if len(train["data"]) != 1:
            raise UserError(
                f"--data: supervised pre-training takes one labelled task, got {len(train['data'])} sources"
            )
        return [labelled_source(settings, float(train.get("fraction", 1.0)), seed)]

    def __init__(self, settings: dict[str, Any], augment: nn.Module, backbone: nn.Module) -> None:
        super().__init__(settings, augment)
        task = load_training_task(
            str(settings["task"]), int(settings["image_size"]), settings.get("uncertain")
        )
        self.kind = task.kind
        self.chance = chance_loss(task)
        self.backbone = backbone
        self.classifier = nn.Linear(int(backbone.num_features), len(task.class_names))
        nn.init.zeros_(self.classifier.bias)

    def step_values(self, step: int) -> dict[str, float]:
        return {**super().step_values(step), "health/chance_loss": self.chance}

    def compute_loss(self, views: list[Tensor], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.backbone(views[0])
        logits = self.classifier(features).float()
        label = batch["label"]
        if self.kind == "multiclass":
            smoothing = float(self.settings.get("label_smoothing", 0.0))
            loss = nn.functional.cross_entropy(logits, label.long(), label_smoothing=smoothing)
        else:
            weight = batch["label_mask"].float()
            per_entry = nn.functional.binary_cross_entropy_with_logits(
                logits, label.float(), reduction="none"
            )
            loss = (per_entry * weight).sum() / weight.sum().clamp_min(1.0)
        return loss, {"collapse/embedding_std": embedding_spread(features)}
