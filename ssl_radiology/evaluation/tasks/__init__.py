"""Labelled downstream tasks: images, labels, patients, subgroup attributes and the fixed split.

``load_task(name, image_size)`` resolves a task YAML (``configs/eval/tasks/``), a path to one, or an
``adapter:PATH`` short form into a :class:`Task`. One module per dataset family registers its builder with
:func:`register_task` (``phantom``, ``medmnist``, ``chexpert``, ``nih``, ``mimic``, ``imagefolder``); every
file-based task reads its images through ``prepare`` (:mod:`.images`), the same pixel path as pre-training.
"""

from ssl_radiology.evaluation.tasks.base import (
    UNCERTAIN_POLICIES,
    Task,
    age_band,
    fingerprint,
    hash_split,
    hold_out_site,
    save_skipped,
    uncertain_labels,
)
from ssl_radiology.evaluation.tasks.registry import (
    adapters,
    available_tasks,
    load_task,
    register_task,
    task_spec,
)

__all__ = [
    "UNCERTAIN_POLICIES", "Task", "adapters", "age_band", "available_tasks", "fingerprint", "hash_split",
    "hold_out_site", "load_task", "register_task", "save_skipped", "task_spec", "uncertain_labels",
]  # fmt: skip
