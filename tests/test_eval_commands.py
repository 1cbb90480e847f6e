"""``ssl-rad knn / linear-eval / finetune / compare`` end to end on the built-in phantom corpus.

CI-sized: tiny backbones at 32 px, 4 seeds, the phantom generated once into a temporary ``SSL_RAD_CACHE``.
Three kinds of checkpoint go through the same commands: an exported pre-training backbone folder, ``random``
and an ImageNet-format timm file (made here from a random 3-channel timm model, so nothing is downloaded).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from conftest import TINY_PHANTOM, copy_configs
from safetensors.torch import save_file

from ssl_radiology.cli import main
from ssl_radiology.models import checkpoint_hash, create_backbone, export_backbone, load_backbone

FAST = ["workers=0", "bootstrap=100"]
#: a few optimizer steps and one learning rate: fine-tuning budgets are in steps (at least min_steps)
FAST_FT = ["finetune.min_steps=4", "finetune.epochs=1", "finetune.base_lrs=[0.01]", "finetune.evals=2"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private cache (phantom + features) and the three checkpoints."""
    root = tmp_path_factory.mktemp("eval")
    previous = {key: os.environ.get(key) for key in ("SSL_RAD_CACHE", "SSL_RAD_CONFIGS")}
    os.environ["SSL_RAD_CACHE"] = str(root / "cache")
    os.environ["SSL_RAD_CONFIGS"] = str(copy_configs(root / "configs", {"phantom": TINY_PHANTOM}))
    torch.manual_seed(0)
    export_backbone(create_backbone("resnet18"), root / "ssl-run", backbone_name="resnet18", image_size=32)
    export_backbone(
        create_backbone("vit_tiny_patch16_224", img_size=32), root / "ssl-vit", backbone_name="vit_tiny_patch16_224",
        image_size=32,
    )  # fmt: skip
    for name in ("resnet18", "vit_tiny_patch16_224"):
        rgb = timm.create_model(name, num_classes=0, in_chans=3)
        save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, root / f"{name}-in1k.safetensors")
    yield root
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _run(*argv: str) -> int:
    return main(list(argv))


def _rows(out) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv")


def test_knn_three_checkpoints_then_compare(env, capsys):
    specs = {
        "ssl": str(env / "ssl-run"),
        "random": "random",
        "imagenet": f"imagenet:{env / 'resnet18-in1k.safetensors'}",
    }
    for name, spec in specs.items():
        code = _run(
            "knn", "--checkpoint", spec, "--backbone", "resnet18", "--data", "phantom-ct", "--image-size", "32",
            "--seeds", "0,1,2,3", "--out", str(env / "knn"), "--name", name, "--ood-split", "--subgroups", "sex,site",
            *FAST,
        )  # fmt: skip
        assert code == 0
    rows = _rows(env / "knn")
    assert set(rows["name"]) == set(specs)
    assert rows.loc[rows["name"] == "ssl", "checkpoint_hash"].unique().tolist() == [
        checkpoint_hash(env / "ssl-run")
    ]
    acc = rows[(rows["metric"] == "accuracy") & (rows["protocol"] == "knn-k20")]
    assert acc.groupby("name")["seed"].nunique().tolist() == [4, 4, 4]
    assert acc["value"].between(0, 1).all()
    metrics = set(rows["metric"])
    assert {"ood/accuracy", "ood_drop/accuracy", "gap[sex]/accuracy", "balanced_accuracy"} <= metrics
    assert metrics & {"sex=F/accuracy", "sex=M/accuracy"}  # whichever sexes the tiny test split holds
    assert {"knn-k10", "knn-k20", "knn-k100", "knn-k200"} <= set(rows["protocol"])
    seed_file = next((env / "knn" / "seeds").glob("ssl__knn__*seed0.json"))
    stored = json.loads(seed_file.read_text())
    assert stored["config"]["eval"]["temperature"] == 0.07 and stored["checkpoint_hash"] == checkpoint_hash(
        env / "ssl-run"
    )

    capsys.readouterr()
    assert (
        _run(
            "compare",
            str(env / "knn"),
            "--baseline",
            "imagenet",
            "--out",
            str(env / "cmp"),
            "--metrics",
            "accuracy",
            "--pair",
            "ssl,random",
            "--bootstrap",
            "200",
        )
        == 0
    )
    pairs = pd.read_csv(env / "cmp" / "pairs.csv")
    assert set(zip(pairs["a"], pairs["b"], strict=True)) == {("ssl", "random")}
    table = pd.read_csv(env / "cmp" / "comparison.csv")
    ssl = table[(table["name"] == "ssl") & (table["protocol"] == "knn-k20")].iloc[0]
    assert ssl["n"] == 1 and ssl["n_draws"] == 4 and np.isfinite(ssl["delta"])  # one checkpoint, 4 draws
    assert (env / "cmp" / "comparison.png").stat().st_size > 1000
    assert "imagenet" in (env / "cmp" / "comparison.md").read_text()


def test_knn_matches_analysis_knn_on_the_same_features(env):
    from ssl_radiology.evaluation.runner import draw_subsets
    from ssl_radiology.evaluation.tasks import load_task
    from ssl_radiology.features.extract import extract_features
    from ssl_radiology.features.knn import knn_accuracy

    task = load_task("phantom-ct", 32)
    features = extract_features(
        load_backbone(env / "ssl-vit"),
        task.dataset,
        image_size=32,
        batch_size=64,
        device="cpu",
        window=(40.0, 400.0),
    )
    train, val = draw_subsets(task, 2, 1.0, None, 0.2)
    bank = np.sort(np.concatenate([train, val]))
    test = task.indices("test")
    expected = knn_accuracy(features[bank], task.labels[bank], features[test], task.labels[test], k=20)
    assert _run(  # no --image-size: the exported run's 32 px from backbone.json
        "knn", "--checkpoint", str(env / "ssl-vit"), "--data", "phantom-ct", "--seeds", "2",
        "--out", str(env / "knn-plain"), *FAST,
    ) == 0  # fmt: skip
    rows = _rows(env / "knn-plain")
    got = rows[(rows["protocol"] == "knn-k20") & (rows["metric"] == "accuracy")]["value"].item()
    assert got == pytest.approx(expected)
    stored = json.loads(next((env / "knn-plain" / "seeds").glob("*.json")).read_text())
    assert stored["config"]["request"]["image_size"] == 32


def test_resume_skips_finished_seeds_and_refuses_other_checkpoint(env, capsys):
    out = env / "resume"
    args = ["knn", "--data", "phantom-ct", "--image-size", "32", "--out", str(out), "--name", "ssl", *FAST]
    assert _run(*args, "--checkpoint", str(env / "ssl-run"), "--seeds", "0,1") == 0
    files = {p: p.stat().st_mtime_ns for p in (out / "seeds").glob("*.json")}
    capsys.readouterr()
    assert _run(*args, "--checkpoint", str(env / "ssl-run"), "--seeds", "0,1,2") == 0
    output = capsys.readouterr().out
    assert output.count("already done") == 2 and "seed 2: knn-k10" in output
    assert all(p.stat().st_mtime_ns == t for p, t in files.items())
    imagenet = f"imagenet:{env / 'resnet18-in1k.safetensors'}"
    assert _run(*args, "--checkpoint", imagenet, "--backbone", "resnet18", "--seeds", "0") == 2
    err = capsys.readouterr().err
    assert checkpoint_hash(env / "ssl-run") in err and checkpoint_hash(imagenet, backbone="resnet18") in err


def test_linear_eval_multilabel_xray_and_multiclass_ct(env):
    common = ["--image-size", "32", "--seeds", "0,1,2,3", *FAST, "sgd.epochs=5", "sgd.base_lrs=[0.1,1.0]"]
    common += ["logreg.cs=[0.1,1.0]"]
    assert _run(
        "linear-eval", "--checkpoint", str(env / "ssl-vit"), "--data", "phantom-xray", "--out", str(env / "lin-x"),
        *common,
    ) == 0  # fmt: skip
    rows = _rows(env / "lin-x")
    assert set(rows["protocol"]) == {"linear-sgd", "linear-logreg"}
    assert {"auroc_mean", "auroc/effusion", "ece", "chosen_C", "chosen_base_lr"} <= set(rows["metric"])
    assert _run(
        "linear-eval", "--checkpoint", f"imagenet:{env / 'vit_tiny_patch16_224-in1k.safetensors'}", "--backbone",
        "vit_tiny_patch16_224", "--data", "phantom-ct", "--fraction", "0.5", "--head", "logreg",
        "--out", str(env / "lin-ct"), *common,
    ) == 0  # fmt: skip
    rows = _rows(env / "lin-ct")
    acc = rows[rows["metric"] == "accuracy"]
    assert len(acc) == 4 and set(acc["protocol"]) == {"linear-logreg"} and set(acc["fraction"]) == {0.5}
    assert set(rows[rows["metric"] == "chosen_C"]["value"]) <= {0.1, 1.0}
    n_train = rows[rows["metric"] == "n_train"]["value"]
    assert (n_train < 0.75 * 288).all()  # half of the training patients (minus validation), never all


def test_finetune_vit_k_shot_and_random_resnet(env):
    assert _run(
        "finetune", "--checkpoint", str(env / "ssl-vit"), "--data", "phantom-ct", "--image-size", "32", "--shots",
        "5", "--seeds", "0,1", "--out", str(env / "ft"), *FAST, *FAST_FT, "batch_size=16",
    ) == 0  # fmt: skip
    rows = _rows(env / "ft")
    assert set(rows["shots"]) == {5} and (rows[rows["metric"] == "n_train"]["value"] == 25).all()
    assert rows[rows["metric"] == "accuracy"]["value"].between(0, 1).all()
    assert _run(
        "finetune", "--checkpoint", "random", "--backbone", "resnet18", "--data", "phantom-xray", "--image-size", "32",
        "--seeds", "0", "--out", str(env / "ft-x"), *FAST, *FAST_FT,
    ) == 0  # fmt: skip
    assert "auroc_mean" in set(_rows(env / "ft-x")["metric"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fraction", "0.01"], "class missing"),
        (["--shots", "100"], "has only"),
        (["--subgroups", "height"], "unknown height"),
    ],
)
def test_subset_errors_are_user_errors(env, capsys, flags, message):
    code = _run(
        "knn", "--checkpoint", str(env / "ssl-run"), "--data", "phantom-ct", "--image-size", "32", "--seeds", "0",
        "--out", str(env / "bad"), *flags, *FAST,
    )  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err
