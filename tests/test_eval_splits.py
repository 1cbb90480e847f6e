"""Patient-level splits, stratified fractions and k-shot subsets: no leakage, seed behaviour, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.splits import fixed_test_split, k_shot, stratified_fraction, validation_split

CLASSES = ["a", "b", "c"]


def _data(n_patients: int = 60, per_patient: int = 5):
    patients = np.repeat([f"p{i:03d}" for i in range(n_patients)], per_patient)
    labels = np.array([i % 3 for i in range(n_patients * per_patient)])
    return patients, labels


def test_test_split_is_patient_level_fixed_and_seed_free():
    patients, _ = _data()
    test = fixed_test_split(patients, 0.2)
    assert not set(patients[test]) & set(patients[~test])
    assert len(set(patients[test])) == 12
    np.testing.assert_array_equal(test, fixed_test_split(patients.copy(), 0.2))
    # order of rows does not matter: the decision is a function of the patient key alone
    perm = np.random.default_rng(0).permutation(len(patients))
    np.testing.assert_array_equal(fixed_test_split(patients[perm], 0.2), test[perm])


def test_validation_split_never_shares_patients_and_varies_by_seed():
    patients, _ = _data()
    pool = np.flatnonzero(~fixed_test_split(patients, 0.2))
    train, val = validation_split(patients, pool, seed=0)
    assert not set(patients[train]) & set(patients[val])
    assert set(train) | set(val) == set(pool)
    assert not np.array_equal(val, validation_split(patients, pool, seed=1)[1])


def test_fraction_is_stratified_patient_aware_and_per_seed():
    patients, labels = _data(100, 1)
    idx = np.arange(100)
    sub0 = stratified_fraction(labels, patients, idx, 0.3, 0, "multiclass", CLASSES)
    assert len(sub0) == 30
    assert np.bincount(labels[sub0]).tolist() == [10, 10, 10]
    sub1 = stratified_fraction(labels, patients, idx, 0.3, 1, "multiclass", CLASSES)
    assert not np.array_equal(sub0, sub1)
    np.testing.assert_array_equal(
        sub0, stratified_fraction(labels, patients, idx, 0.3, 0, "multiclass", CLASSES)
    )
    patients5, labels5 = _data(40, 5)
    sub = stratified_fraction(labels5, patients5, np.arange(200), 0.25, 0, "multiclass", CLASSES)
    chosen = set(patients5[sub])
    assert len(chosen) == 10 and all(np.isin(np.flatnonzero(np.isin(patients5, list(chosen))), sub))


def test_fraction_too_small_names_missing_class():
    patients, labels = _data(30, 1)
    with pytest.raises(UserError, match=r"fraction 0.05 .*class missing"):
        stratified_fraction(labels, patients, np.arange(30), 0.05, 0, "multiclass", CLASSES)


def test_multilabel_fraction_keeps_every_label():
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 3)) < 0.3).astype(float)
    patients = np.array([f"p{i}" for i in range(200)])
    sub = stratified_fraction(labels, patients, np.arange(200), 0.1, 0, "multilabel", CLASSES)
    assert len(sub) == 20 and (labels[sub].sum(axis=0) > 0).all()


def test_k_shot_per_class_and_errors():
    _, labels = _data(30, 1)
    sub = k_shot(labels, np.arange(30), 5, seed=0, kind="multiclass", class_names=CLASSES)
    assert np.bincount(labels[sub]).tolist() == [5, 5, 5]
    assert not np.array_equal(
        sub, k_shot(labels, np.arange(30), 5, seed=1, kind="multiclass", class_names=CLASSES)
    )
    with pytest.raises(UserError, match="class 'a' has only 10"):
        k_shot(labels, np.arange(30), 11, seed=0, kind="multiclass", class_names=CLASSES)


def test_stratified_test_split_gives_every_stratum_its_share():
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{i:03d}" for i in range(120)], 3)
    site = np.repeat(rng.choice(["A", "B", "C"], size=120, p=[0.5, 0.3, 0.2]), 3)
    sex = np.repeat(rng.choice(["F", "M"], size=120), 3)
    strata = np.char.add(np.char.add(site, "|"), sex)
    test = fixed_test_split(patients, 0.25, strata=strata)
    assert len(set(patients[test])) == 30  # the total does not change with stratification
    assert not set(patients[test]) & set(patients[~test])
    first = np.arange(0, 360, 3)  # one row per patient
    for value in np.unique(strata):
        members = strata[first] == value
        share = test[first][members].sum()
        assert abs(share - 0.25 * members.sum()) < 1.0, value  # largest remainder: within one patient
    perm = rng.permutation(len(patients))
    np.testing.assert_array_equal(fixed_test_split(patients[perm], 0.25, strata=strata[perm]), test[perm])


def test_stratified_split_keeps_a_confound_from_flipping():
    # 40 patients; site A holds 30 of them and every positive label. An unstratified hash split may send
    # any number of site-B patients to test; stratified, test holds exactly a quarter of each site.
    patients = np.array([f"case{i:02d}" for i in range(40)])
    site = np.array(["A"] * 30 + ["B"] * 10)
    test = fixed_test_split(patients, 0.25, strata=site)
    assert (site[test] == "A").sum() == 8 and (site[test] == "B").sum() == 2  # 7.5 / 2.5 → 8 / 2
    # a patient's stratum is its most frequent row value, so per-row labels can join the strata
    rows = np.repeat(patients, 2)
    mixed = np.repeat(site, 2).astype(object)
    mixed[1::2] = "other"  # ties: the smallest value wins ("A" or "B" before "other")
    np.testing.assert_array_equal(fixed_test_split(rows, 0.25, strata=mixed), np.repeat(test, 2))


def test_stratified_split_without_strata_is_the_plain_hash_split():
    patients, _ = _data()
    np.testing.assert_array_equal(
        fixed_test_split(patients, 0.2, strata=np.zeros(len(patients))), fixed_test_split(patients, 0.2)
    )
    with pytest.raises(UserError, match="strata: 3 values"):
        fixed_test_split(patients, 0.2, strata=np.zeros(3))
