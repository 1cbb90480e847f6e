"""Patient-level pre-training subsets (``pretrain --fraction``): whole patients, seeded, nested."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import TINY_PHANTOM, copy_configs

from ssl_radiology.data.subsets import patient_fraction
from ssl_radiology.errors import UserError


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from ssl_radiology.data import open_source

    root = tmp_path_factory.mktemp("subsets")
    saved = {key: os.environ.get(key) for key in ("SSL_RAD_CACHE", "SSL_RAD_CONFIGS")}
    os.environ["SSL_RAD_CACHE"] = str(root / "cache")
    os.environ["SSL_RAD_CONFIGS"] = str(copy_configs(root / "configs", {"phantom": TINY_PHANTOM}))
    yield open_source("phantom:CT")
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def patients(dataset) -> set[str]:
    return set(dataset.manifest["patient_key"])


def test_fraction_keeps_whole_patients_and_is_nested(phantom) -> None:
    everyone = patients(phantom)
    assert len(everyone) == 8
    quarter, half = patient_fraction(phantom, 0.25, seed=3), patient_fraction(phantom, 0.5, seed=3)
    assert len(patients(quarter)) == 2 and len(patients(half)) == 4
    assert patients(quarter) <= patients(half) <= everyone
    per_patient = phantom.manifest.groupby("patient_key").size()
    assert len(half) == per_patient[list(patients(half))].sum()  # every slice of a kept patient
    assert set(half.manifest["modality"]) == {"CT"}
    assert np.array_equal(half[0]["image"].numpy(), phantom[int(np.flatnonzero(
        phantom.manifest["patient_key"].isin(patients(half)))[0])]["image"].numpy())  # fmt: skip
    assert patients(patient_fraction(phantom, 0.5, seed=3)) == patients(half)  # seeded
    assert patient_fraction(phantom, 1.0, seed=3) is phantom


def test_fraction_out_of_range_is_a_user_error(phantom) -> None:
    with pytest.raises(UserError, match=r"in \(0, 1\]"):
        patient_fraction(phantom, 0.0, seed=0)
