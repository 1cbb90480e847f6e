"""Patient-level splits, label-stratified data fractions and k-shot subsets.

Three rules keep the numbers honest:

* the **test split is fixed**: a patient goes to test when its key ranks among the lowest by a salted SHA-256
  hash, so it never depends on the seed and adding seeds never moves a patient between train and test;
  given ``strata`` (e.g. site × sex), each stratum sends its own share of patients to test, so an association
  between a confound and the label cannot flip between train and test by the luck of the hash;
* **no patient is in two splits** (train / validation / test / ood): slices of one patient are near duplicates;
* subsets are **drawn per seed** (that is what the seeds measure) and **fail loudly** when a class ends up
  without a sample instead of silently reporting a metric over fewer classes.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from ssl_radiology.errors import UserError


def _hash_unit(key: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:8], "big")


def fixed_test_split(
    patients: np.ndarray,
    test_fraction: float = 0.2,
    salt: str = "ssl-rad-test",
    strata: np.ndarray | None = None,
) -> np.ndarray:
    """Boolean mask of the test rows: ``round(test_fraction × n_patients)`` patients (at least one, never all),
    those with the smallest salted hash. Deterministic and independent of any seed and of the row order.

    ``strata`` (one value per row, e.g. ``"A|F"`` for site A, female) makes the split stratified: the test
    patients are shared out over the strata in proportion to their sizes (largest-remainder rule, so the
    total is unchanged) and taken in hash order within each. A patient's stratum is its most frequent value
    (ties: the smallest), so a per-row label such as a slice's finding may be folded in too.
    """
    keys = np.asarray(patients).astype(str)
    unique = np.unique(keys)
    if len(unique) < 2:
        raise UserError(f"a patient-level split needs at least 2 patients, found {len(unique)}")
    n_test = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
    if strata is None:
        order = sorted(unique, key=lambda p: _hash_unit(p, salt))
        return np.isin(keys, order[:n_test])
    values = np.asarray(strata).astype(str)
    if len(values) != len(keys):
        raise UserError(f"strata: {len(values)} values for {len(keys)} rows")
    frame = pd.DataFrame({"patient": keys, "stratum": values})
    counts = frame.groupby(["patient", "stratum"]).size().reset_index(name="n")
    counts = counts.sort_values(["patient", "n", "stratum"], ascending=[True, False, True])
    of_patient = counts.drop_duplicates("patient").set_index("patient")["stratum"]
    names, sizes = np.unique(of_patient.to_numpy(), return_counts=True)
    exact = sizes * n_test / len(unique)
    take = np.floor(exact).astype(int)
    order = sorted(range(len(names)), key=lambda i: (-(exact[i] - take[i]), _hash_unit(names[i], salt)))
    take[order[: n_test - int(take.sum())]] += 1
    chosen: list[str] = []
    for name, n in zip(names, take, strict=True):
        members = of_patient.index[of_patient.to_numpy() == name]
        chosen.extend(sorted(members, key=lambda p: _hash_unit(p, salt))[:n])
    return np.isin(keys, chosen)


def check_classes(labels: np.ndarray, idx: np.ndarray, kind: str, class_names: list[str], where: str) -> None:
    """Raise naming every class (or label) that has no sample in the subset ``idx``."""
    if kind == "multiclass":
        present = np.isin(np.arange(len(class_names)), labels[idx])
    else:
        present = labels[idx].sum(axis=0) > 0
    missing = [name for name, ok in zip(class_names, present, strict=True) if not ok]
    if missing:
        noun = "class" if kind == "multiclass" else "label (no positive sample)"
        raise UserError(f"{where}: {noun} missing: {', '.join(missing)} ({len(idx)} samples)")


def _unit_strata(labels: np.ndarray, patients: np.ndarray, idx: np.ndarray, kind: str):
    """Units (patients) inside ``idx``, their rows and a stratum label each (majority class, or the set of
    labels any of its rows carries for multilabel)."""
    keys = np.asarray(patients).astype(str)[idx]
    units, inverse = np.unique(keys, return_inverse=True)
    rows = [idx[inverse == u] for u in range(len(units))]
    if kind == "multiclass":
        strata = [str(np.bincount(labels[r]).argmax()) for r in rows]
    else:
        strata = ["".join("1" if v else "0" for v in labels[r].max(axis=0) > 0) for r in rows]
    return rows, np.asarray(strata)


def stratified_fraction(
    labels: np.ndarray,
    patients: np.ndarray,
    idx: np.ndarray,
    fraction: float,
    seed: int,
    kind: str,
    class_names: list[str],
) -> np.ndarray:
    """A ``fraction`` of the patients in ``idx``, stratified by their labels, drawn with ``seed``.

    Sampling whole patients keeps the subset patient-aware; each stratum gets its share by the
    largest-remainder rule so the total is ``round(fraction × n_patients)``.
    """
    if not 0 < fraction <= 1:
        raise UserError(f"fraction must be in (0, 1], got {fraction}")
    idx = np.asarray(idx)
    if fraction == 1:
        return np.sort(idx)
    rows, strata = _unit_strata(labels, patients, idx, kind)
    rng = np.random.default_rng(seed)
    names, counts = np.unique(strata, return_counts=True)
    total = round(fraction * len(rows))
    exact = counts * total / len(rows)
    take = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - take), kind="stable")
    take[remainder_order[: total - take.sum()]] += 1
    chosen: list[np.ndarray] = []
    for name, n in zip(names, take, strict=True):
        members = np.flatnonzero(strata == name)
        chosen.extend(rows[m] for m in rng.choice(members, size=n, replace=False))
    subset = np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=int)
    check_classes(
        labels,
        subset,
        kind,
        class_names,
        f"fraction {fraction:g} of {len(rows)} training patients (seed {seed})",
    )
    return subset


def k_shot(
    labels: np.ndarray, idx: np.ndarray, shots: int, seed: int, kind: str, class_names: list[str]
) -> np.ndarray:
    """``shots`` samples per class (multiclass) or ``shots`` positives per label (multilabel, union)."""
    if shots < 1:
        raise UserError(f"shots must be >= 1, got {shots}")
    idx = np.asarray(idx)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for c, name in enumerate(class_names):
        members = idx[labels[idx] == c] if kind == "multiclass" else idx[labels[idx, c] > 0]
        if len(members) < shots:
            raise UserError(f"{shots}-shot: class '{name}' has only {len(members)} training samples")
        chosen.append(rng.choice(members, size=shots, replace=False))
    return np.unique(np.concatenate(chosen))


def validation_split(
    patients: np.ndarray, idx: np.ndarray, seed: int, fraction: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` (training rows) by patient into (train, validation); the test split is never touched."""
    idx = np.asarray(idx)
    keys = np.asarray(patients).astype(str)[idx]
    units = np.unique(keys)
    if len(units) < 2:
        raise UserError(f"cannot carve a validation split from {len(units)} training patient(s)")
    rng = np.random.default_rng(seed + 10_000)
    n_val = min(len(units) - 1, max(1, round(fraction * len(units))))
    val_units = rng.choice(units, size=n_val, replace=False)
    is_val = np.isin(keys, val_units)
    return idx[~is_val], idx[is_val]
