"""Provenance of a backbone (health, pre-training patients) and the leakage guard that reads it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.leakage import check_overlap
from ssl_radiology.models.provenance import (
    health_status,
    read_health,
    read_init_hash,
    read_n_images,
    read_patients,
    row_fields,
)

SPLIT = np.array(["train", "train", "test", "test", "ood", "val"])
PATIENTS = np.array(["a", "b", "c", "d", "e", "f"])


def _run_dir(tmp_path, patients=("a", "b", "c"), status="collapsed"):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "pretrain_patients.json").write_text(
        json.dumps({"patients": sorted(patients), "n_images": 12, "sources": ["phantom:CT"]})
    )
    (run / "health.json").write_text(
        json.dumps({"method": "dino", "status": status, "message": "loss at ln K"})
    )
    (run / "backbone.json").write_text(
        json.dumps({"backbone": "resnet18", "init": {"spec": "x", "hash": "abc"}})
    )
    (run / "backbone.safetensors").write_bytes(b"")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    return run


def test_provenance_of_run_dir_export_and_checkpoint(tmp_path):
    run = _run_dir(tmp_path)
    for spec in (run, run / "backbone.safetensors", run / "checkpoints" / "last.ckpt"):
        assert read_patients(spec) == {"a", "b", "c"}
        assert read_health(spec)["status"] == "collapsed" and health_status(spec) == "collapsed"
    assert read_n_images(run) == 12 and read_init_hash(run) == "abc"
    assert row_fields(run) == {"health": "collapsed", "init_hash": "abc"}


def test_builtin_specs_saw_no_patients_and_missing_records_are_unknown(tmp_path):
    for spec in ("random", "raw-pixels:16", "imagenet", "imagenet:dino"):
        assert read_patients(spec) == set() and health_status(spec) == "" and read_init_hash(spec) is None
    bare = tmp_path / "old-run"
    bare.mkdir()
    assert read_patients(bare) is None and read_health(bare) is None and health_status(bare) == "unknown"


def test_overlap_refused_by_default_and_recorded_with_allow(tmp_path, capsys):
    run = _run_dir(tmp_path, patients=("a", "c", "e"))  # c is a test patient, e an OOD one
    with pytest.raises(UserError, match=r"^2 of the 3 test patients of task toy .*--allow-overlap"):
        check_overlap(run, "toy", SPLIT, PATIENTS)
    assert check_overlap(run, "toy", SPLIT, PATIENTS, allow=True) == 2
    assert "recorded as 'overlap'" in capsys.readouterr().err
    clean = _run_dir(tmp_path / "clean", patients=("a", "b", "f"))  # training/validation patients only
    assert check_overlap(clean, "toy", SPLIT, PATIENTS) == 0
    assert check_overlap("random", "toy", SPLIT, PATIENTS) == 0
    bare = tmp_path / "old-run"
    bare.mkdir()
    assert check_overlap(bare, "toy", SPLIT, PATIENTS) is None
    assert "cannot be checked" in capsys.readouterr().err
