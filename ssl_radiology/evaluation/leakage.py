"""Leakage guard: refuse to evaluate a backbone on test patients its pre-training already saw.

A self-supervised encoder that saw a test patient's images during pre-training has an unfair advantage on
exactly that patient, so a transfer result on such a split overstates what the method would do on new
patients. Patient keys are keyed hashes with one secret per installation (``data.keys``), so the keys a
pre-training run recorded (``pretrain_patients.json``) and a task's keys are comparable across datasets.

The evaluated patients are those of the ``test`` and ``ood`` splits (both are scored). Training and
validation patients may overlap pre-training: that is ordinary use of unlabelled data.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from ssl_radiology.errors import UserError
from ssl_radiology.models.provenance import read_patients

ALLOW_FLAG = "--allow-overlap"


def evaluated_patients(split: np.ndarray, patients: np.ndarray) -> set[str]:
    """Distinct patient keys of the rows that are scored (test and OOD splits)."""
    scored = np.isin(split, ("test", "ood"))
    return {str(p) for p in np.asarray(patients)[scored]}


def check_overlap(
    spec: str | os.PathLike[str], task_name: str, split: np.ndarray, patients: np.ndarray, allow: bool = False
) -> int | None:
    """Number of scored patients also seen in pre-training; UserError on any overlap unless ``allow``.

    Returns None (with a warning) when the backbone did not record its pre-training patients, e.g. a run
    made before provenance was recorded: the check cannot be done, and the rows say so with an empty value.
    """
    seen = read_patients(spec)
    if seen is None:
        print(
            f"warning: {os.fspath(spec)} records no pre-training patients; the test-patient overlap of "
            f"task {task_name} cannot be checked",
            file=sys.stderr,
        )
        return None
    scored = evaluated_patients(split, patients)
    shared = len(scored & seen)
    if shared and not allow:
        raise UserError(
            f"{shared} of the {len(scored)} test patients of task {task_name} were in the pre-training data "
            f"of {os.fspath(spec)}; results would overstate transfer to new patients. Pre-train without them, "
            f"or pass {ALLOW_FLAG} to evaluate anyway (the overlap is then recorded in every result row)"
        )
    if shared:
        print(
            f"warning: {shared} of the {len(scored)} test patients of task {task_name} were seen in "
            f"pre-training ({ALLOW_FLAG}); recorded as 'overlap' in every result row",
            file=sys.stderr,
        )
    return shared
