"""Patient-level subsets of a prepared dataset, for pre-training-scale studies (1 / 10 / 100 % of a source).

Subsets are drawn by patient (all slices of a kept patient stay together) and nested: with one seed, the
patients of a 1 % subset are among those of the 10 % subset, so a scaling curve adds data instead of
redrawing it.
"""

from __future__ import annotations

import numpy as np

from ssl_radiology.data.prepared import PreparedDataset
from ssl_radiology.errors import UserError


def patient_fraction(dataset: PreparedDataset, fraction: float, seed: int) -> PreparedDataset:
    """The rows of a seeded ``fraction`` of ``dataset``'s patients (at least one patient).

    ``dataset`` is a whole prepared folder or a modality selection of it (what ``open_source`` returns).
    """
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"data fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return dataset
    manifest = dataset.manifest
    # a slice without a patient identifier is its own patient
    patients = (
        manifest["patient_key"]
        .astype(object)
        .where(manifest["patient_key"].notna(), "row-" + manifest.index.astype(str))
    )
    unique = np.sort(patients.unique().astype(str))
    order = np.random.default_rng(seed).permutation(len(unique))
    keep = set(unique[order[: max(1, round(fraction * len(unique)))]])
    rows = np.flatnonzero(patients.astype(str).isin(keep).to_numpy())
    modalities = sorted(set(manifest["modality"]))
    subset = PreparedDataset(dataset.root, modality=modalities, indices=rows)
    where = ["shard", "offset"]
    if not subset.manifest[where].equals(manifest[where].iloc[rows].reset_index(drop=True)):
        raise ValueError("patient_fraction needs a whole prepared dataset or a modality selection of one")
    return subset
