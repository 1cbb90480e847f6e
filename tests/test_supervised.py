"""Supervised pre-training on a labelled task: train-split-only data, masked BCE / CE, CLI run with resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_PHANTOM, phantom_configs
from omegaconf import OmegaConf

from ssl_radiology.cli import main
from ssl_radiology.config import load_group
from ssl_radiology.errors import UserError
from ssl_radiology.methods import create_method
from ssl_radiology.methods.supervised import chance_loss, labelled_source, load_training_task, train_rows


@pytest.fixture(scope="module")
def phantom_env(tmp_path_factory):
    """An 8-case phantom (every label present, 2 test patients), shared through the cache."""
    base = tmp_path_factory.getbasetemp()
    with phantom_configs(base, "supervised", TINY_PHANTOM, "supervised-cache") as env:
        load_training_task.cache_clear()
        yield env
        load_training_task.cache_clear()


def settings(task: str, **changes) -> dict:
    cfg = OmegaConf.merge(
        load_group("method", "supervised"),
        {"task": task, "backbone": "resnet18", "image_size": 32, "batch_size": 2, "seed": 0},
        changes,
    )
    return OmegaConf.to_container(cfg, resolve=True)


def test_source_holds_only_train_patients_and_fractions_nest(phantom_env):
    task = load_training_task("phantom-xray", 32, None)
    source = labelled_source(settings("phantom-xray"), 1.0, seed=0)
    test_patients = set(task.patients[task.indices("test")])
    assert test_patients and not test_patients & set(source.manifest["patient_key"])
    assert len(source) == len(task.indices("train"))
    item = source[0]
    n_labels = len(task.class_names)
    assert item["label"].shape == (n_labels,) and item["label_mask"].dtype == torch.bool and "image" in item
    half, quarter = train_rows(task, 0.5, seed=3), train_rows(task, 0.25, seed=3)
    assert set(quarter) <= set(half) < set(task.indices("train"))
    assert len(set(task.patients[half])) == round(0.5 * len(set(task.patients[task.indices("train")])))


def test_masked_bce_ignores_unknown_labels_and_ce_handles_multiclass(phantom_env):
    module = create_method("supervised", settings("phantom-xray"))
    n_labels = len(load_training_task("phantom-xray", 32, None).class_names)
    assert n_labels >= 2 and module.classifier.out_features == n_labels and module.kind == "multilabel"
    views = [torch.randn(4, 1, 32, 32)]
    label = torch.ones(4, n_labels)
    mask = torch.ones(4, n_labels, dtype=torch.bool)
    mask[:, -1] = False
    module.eval()  # BatchNorm in eval: the two calls see identical features
    first, extra = module.compute_loss(views, {"label": label, "label_mask": mask})
    flipped = label.clone()
    flipped[:, -1] = 0.0  # an unknown entry changes: the loss must not
    second, _ = module.compute_loss(views, {"label": flipped, "label_mask": mask})
    assert torch.equal(first, second) and "collapse/embedding_std" in extra
    multiclass = create_method("supervised", settings("phantom-ct"))
    task = load_training_task("phantom-ct", 32, None)
    assert multiclass.kind == "multiclass" and multiclass.classifier.out_features == len(task.class_names)
    loss, _ = multiclass.compute_loss(views, {"label": torch.tensor([0, 1, 0, 1]), "label_mask": mask})
    assert torch.isfinite(loss)
    prior = np.bincount(task.labels[task.indices("train")]) / len(task.indices("train"))
    assert chance_loss(task) == pytest.approx(-(prior[prior > 0] * np.log(prior[prior > 0])).sum())


def test_supervised_rejects_extra_views_and_several_tasks(phantom_env, tmp_path, capsys):
    with pytest.raises(UserError, match=r"views\.n_local"):
        create_method("supervised", settings("phantom-xray", views={"n_local": 2}))
    args = ["pretrain", "--method", "supervised", "--data", "phantom-xray", "--data", "phantom-ct",
            "--max-steps", "1", "--out", str(tmp_path / "two")]  # fmt: skip
    assert main(args) == 2
    assert "one labelled task" in capsys.readouterr().err
    source = [
        "pretrain",
        "--method",
        "supervised",
        "--data",
        "phantom",
        "--max-steps",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(source) == 2
    assert "needs a labelled task" in capsys.readouterr().err  # a prepared source has no labels


def argv(out, *extra: str) -> list[str]:
    flags = "--data phantom-xray --image-size 32 --batch-size 2 --accelerator cpu --workers 0 --max-steps 4"
    return ["pretrain", "--method", "supervised", *flags.split(), "--backbone", "resnet18",
            "--checkpoint-every", "100", "--out", str(out), "train.log_every=1", *extra]  # fmt: skip


def test_cli_run_trains_on_the_train_split_exports_and_resumes_exactly(phantom_env, tmp_path):
    import timm
    from safetensors.torch import load_file

    assert main(argv(tmp_path / "full")) == 0
    split = tmp_path / "split"
    assert main(argv(split, "train.stop_at_step=2")) == 0
    assert main([*argv(split), "--resume"]) == 0
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    resumed = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    model = timm.create_model("resnet18", in_chans=1, num_classes=0)
    model.load_state_dict(load_file(tmp_path / "full" / "backbone.safetensors"), strict=True)
    record = json.loads((tmp_path / "full" / "pretrain_patients.json").read_text())
    task = load_training_task("phantom-xray", 32, None)
    assert set(record["patients"]) == set(task.patients[task.indices("train")])
    health = json.loads((tmp_path / "full" / "health.json").read_text())
    assert health["method"] == "supervised" and health["chance_loss"] > 0


def test_chexpert_uncertain_policies_reach_the_loss_mask_and_a_cli_run(tmp_path, monkeypatch):
    from datasets import write_chexpert

    monkeypatch.setenv("SSL_RAD_CACHE", str(tmp_path / "cache"))
    root = write_chexpert(tmp_path / "downloads", train_patients=12, valid_patients=4).root
    spec = f"chexpert:{root}"
    ignore = labelled_source(settings(spec, uncertain="ignore"), 1.0, seed=0)
    ones = labelled_source(settings(spec, uncertain="U-Ones"), 1.0, seed=0)
    zeros = labelled_source(settings(spec, uncertain="U-Zeros"), 1.0, seed=0)
    assert not ignore.label_mask.all() and ones.label_mask.all() and zeros.label_mask.all()
    assert ones.labels.sum() > zeros.labels.sum()  # uncertain findings count as positive / negative
    assert np.array_equal(ones.labels[ignore.label_mask], zeros.labels[ignore.label_mask])  # known ones agree
    run = tmp_path / "run"
    args = ["pretrain", "--method", "supervised", "--data", spec, "--backbone", "resnet18", "--image-size", "32",
            "--batch-size", "4", "--max-steps", "2", "--accelerator", "cpu", "--workers", "0", "--out", str(run),
            "method.uncertain=ignore"]  # fmt: skip
    assert main(args) == 0
    assert (run / "backbone.safetensors").is_file()
    assert OmegaConf.load(run / "config.yaml").method.task == spec
