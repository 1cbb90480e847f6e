"""The leakage guard and the provenance columns through the CLI, as a user runs them (tiny phantom, 32 px)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_PHANTOM, copy_configs

from ssl_radiology.cli import main
from ssl_radiology.models import create_backbone, export_backbone

FAST = ["--seeds", "0,1", "workers=0", "bootstrap=0"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private cache and config copy, and a 'pre-training run' whose corpus holds 2 test patients."""
    from ssl_radiology.evaluation.tasks import load_task

    root = tmp_path_factory.mktemp("leak")
    previous = {key: os.environ.get(key) for key in ("SSL_RAD_CACHE", "SSL_RAD_CONFIGS")}
    os.environ["SSL_RAD_CACHE"] = str(root / "cache")
    os.environ["SSL_RAD_CONFIGS"] = str(copy_configs(root / "configs", {"phantom": TINY_PHANTOM}))
    torch.manual_seed(0)
    run = root / "run"
    export_backbone(create_backbone("resnet18"), run, backbone_name="resnet18", image_size=32)
    task = load_task("phantom-ct", 32)
    test = sorted(set(task.patients[task.split == "test"]))
    train = sorted(set(task.patients[task.split == "train"]))
    planted = [*test[:2], *train]
    (run / "pretrain_patients.json").write_text(json.dumps({"patients": planted, "n_images": 99}))
    (run / "health.json").write_text(json.dumps({"status": "collapsed", "message": "loss stayed at ln K"}))
    yield root, len(set(task.patients[np.isin(task.split, ["test", "ood"])]))
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_overlap_refused_then_recorded_with_allow_overlap(env, capsys):
    root, n_test = env
    argv = [
        "knn",
        "--checkpoint",
        str(root / "run"),
        "--data",
        "phantom-ct",
        "--out",
        str(root / "ev"),
        *FAST,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"2 of the {n_test} test patients of task phantom-ct" in err and "--allow-overlap" in err
    assert not (root / "ev" / "results.csv").exists()
    assert main([*argv, "--allow-overlap"]) == 0
    rows = pd.read_csv(root / "ev" / "results.csv")
    assert (rows["overlap"] == 2).all() and (rows["health"] == "collapsed").all()
    assert rows["predictions"].notna().all() and (root / "ev" / "seeds" / rows["predictions"][0]).is_file()


def test_raw_pixels_baseline_and_compare_flags(env, capsys):
    root, _ = env
    out = root / "pix"
    assert (
        main(["knn", "--checkpoint", "raw-pixels:8:4", "--data", "phantom-ct", "--out", str(out), *FAST]) == 0
    )
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["checkpoint_hash"]) == {"raw-pixels-8px-pca4"} and (rows["overlap"] == 0).all()
    cmp = root / "cmp"
    pixels = rows["name"][0]
    argv = [
        "compare",
        str(root / "ev"),
        str(out),
        "--baseline",
        pixels,
        "--pair",
        f"run,{pixels}",
        "--out",
        str(cmp),
    ]
    assert main(argv) == 0
    table = pd.read_csv(cmp / "comparison.csv")
    run = table[(table["name"] == "run") & (table["protocol"] == "knn-k20") & (table["metric"] == "accuracy")]
    assert run["n"].iloc[0] == 1 and run["n_draws"].iloc[0] == 2  # one checkpoint, two evaluation draws
    assert np.isfinite(run["p_boot"].iloc[0]) and run["health"].iloc[0] == "collapsed"
    assert "2 test patients seen in pre-training" in (cmp / "comparison.md").read_text()
    pairs = pd.read_csv(cmp / "pairs.csv")
    assert set(pairs["a"]) == {"run"} and pairs["p_holm"].notna().any()
    assert main([*argv[:-2], "--pair", "run", "--out", str(cmp)]) == 2
    assert "expected two condition names" in capsys.readouterr().err
