"""``ssl-rad pretrain`` end to end on a tiny phantom corpus: all methods, export, exact resume, crash, errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ssl_radiology.cli import main

REPO = Path(__file__).resolve().parent.parent
TINY = {
    "dino": [
        "--backbone",
        "vit_tiny_patch16_224",
        "method.head.out_dim=64",
        "method.head.hidden_dim=32",
        "method.head.bottleneck_dim=16",
        "method.views.n_local=2",
    ],
    "simclr": ["--backbone", "resnet18", "method.projection.hidden_dim=32", "method.projection.out_dim=16"],
    "mae": [
        "--backbone",
        "vit_tiny_patch16_224",
        "method.decoder.dim=32",
        "method.decoder.depth=1",
        "method.decoder.num_heads=2",
    ],
}


def argv(method: str, out: Path, *extra: str, steps: int = 3, workers: int = 0, every: int = 2) -> list[str]:
    flags = f"--data phantom --image-size 32 --batch-size 4 --accelerator cpu --checkpoint-every {every}"
    return ["pretrain", "--method", method, *flags.split(), "--max-steps", str(steps), "--workers", str(workers),
            "--out", str(out), *TINY[method], "train.log_every=1", *extra]  # fmt: skip


def state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("method", ["dino", "simclr", "mae"])
def test_method_pretrains_and_exports_a_timm_loadable_backbone(method, phantom_env, tmp_path):
    import timm
    from safetensors.torch import load_file

    run = tmp_path / method
    args = argv(method, run)
    if method == "simclr":  # mix CT slices and radiographs half and half
        args[args.index("--data") + 1 : args.index("--data") + 2] = ["phantom:CT", "--data", "phantom:CR,DX"]
        args += ["--weights", "0.5,0.5"]
    if method == "dino":  # pre-train on half of the patients (scaling studies), overrides before the flag
        args = [*args[:1], "train.accumulate=1", *args[1:], "--fraction", "0.5"]
    assert main(args) == 0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 and (run / "checkpoints" / "step=2.ckpt").is_file()
    info = ckpt["ssl_radiology"]
    assert info["method"] == method and info["image_size"] == 32
    kwargs = {"img_size": 32} if "vit" in info["backbone"] else {}
    model = timm.create_model(info["backbone"], in_chans=1, num_classes=0, **kwargs)
    exported = load_file(run / "backbone.safetensors")
    model.load_state_dict(exported, strict=True)
    prefix = info["backbone_prefix"]
    assert prefix == {"dino": "teacher_backbone.", "simclr": "backbone.", "mae": "encoder.vit."}[method]
    for key, value in exported.items():
        assert torch.equal(ckpt["state_dict"][prefix + key], value)
    meta = yaml.safe_load((run / "backbone.json").read_text())
    assert meta["method"] == method and meta["in_chans"] == 1 and meta["num_features"] == model.num_features
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["method"]["batch_size"] == 4 and len(saved["train"]["data"]) == 1 + (method == "simclr")
    assert saved["train"]["fraction"] == (0.5 if method == "dino" else 1.0)
    metrics = (run / "metrics.csv").read_text().splitlines()
    assert "train/loss" in metrics[0] and "collapse/embedding_std" in metrics[0] and len(metrics) >= 4


@pytest.mark.parametrize(("method", "workers"), [("dino", 0), ("simclr", 2)])
def test_stopped_and_resumed_run_ends_with_exactly_the_uninterrupted_weights(
    method, workers, phantom_env, tmp_path
):
    # 12 samples per epoch at batch 4: the 6-step run crosses an epoch boundary, the stop (step 4) is mid-epoch
    common = dict(steps=6, workers=workers, every=100)
    epoch = "train.epoch_length=12"
    assert main(argv(method, tmp_path / "full", epoch, **common)) == 0
    split = tmp_path / "split"
    assert main(argv(method, split, epoch, "train.stop_at_step=4", **common)) == 0
    assert torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert main([*argv(method, split, epoch, **common), "--resume"]) == 0
    full, resumed = state(tmp_path / "full"), state(split)
    assert full.keys() == resumed.keys()
    assert max((full[k].float() - resumed[k].float()).abs().max().item() for k in full) == 0.0
    rows = (split / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) >= 6  # the resumed fit appended to the first one's metrics


def test_kill_9_during_a_run_leaves_a_loadable_checkpoint_and_resume_finishes(phantom_env, tmp_path):
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "ssl_radiology", *argv("mae", run, steps=400, every=1)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy()
    )
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "step=3.ckpt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "pretrain subprocess died or stalled"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # step=3.ckpt is written before last.ckpt: the kill may land before, during or after last.ckpt's save
    step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert step >= 2
    assert main([*argv("mae", run, f"train.stop_at_step={step + 2}", steps=400), "--resume"]) == 0
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step + 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-epochs", "1"], "--max-steps and --max-epochs"),
        (["--backbone", "no_such_net"], "unknown backbone 'no_such_net'"),
        (["--image-size", "40"], "--image-size 40 is not divisible by the patch size 16"),
        (["method.views.local_size=24"], "method.views.local_size 24 is not divisible by the patch size 16"),
        (["--data", "no-such-source"], "unknown data source 'no-such-source'"),
        (["--weights", "1,2,3"], "--weights: 3 weights for 1 --data sources"),
        (["--batch-size", "0"], "--batch-size must be ≥ 1"),
        (["train.devices=0"], "train.devices: must be ≥ 1, got 0"),
        (["train.log_every=abc"], "train.log_every: expected an integer, got 'abc'"),
        (["train.crops=gpu"], "train.crops must be one of auto, loader, device, got 'gpu'"),
        (["train.fraction=0"], "train.fraction: fractions must be in (0, 1]"),
    ],
)
def test_bad_settings_fail_before_any_work_naming_the_setting(extra, message, phantom_env, tmp_path, capsys):
    out = tmp_path / "bad"
    args = argv("dino", out)
    if extra[0] == "--data":  # replace, do not add, the source
        args[args.index("--data") + 1] = extra[1]
        extra = []
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


def test_mae_with_a_cnn_and_unknown_methods_are_rejected(phantom_env, tmp_path, capsys):
    assert main([*argv("mae", tmp_path / "a"), "--backbone", "resnet18"]) == 2
    assert "mae needs a vision transformer" in capsys.readouterr().err.lower()
    assert main(["pretrain", "--method", "byol", "--data", "phantom", "--max-steps", "1"]) == 2
    assert "unknown method 'byol'" in capsys.readouterr().err


def test_existing_run_needs_resume(phantom_env, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert main(argv("dino", run)) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_optional_logger_missing_or_unknown_fails_before_any_work(phantom_env, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == "wandb" else real(name, *a, **k)
    )
    assert main([*argv("dino", tmp_path / "w"), "train.loggers=[csv,wandb]"]) == 2
    assert (
        "train.loggers=wandb needs the optional package 'wandb': pip install wandb" in capsys.readouterr().err
    )
    assert main([*argv("dino", tmp_path / "n"), "train.loggers=[neptune]"]) == 2
    assert "unknown logger 'neptune'" in capsys.readouterr().err
    assert not (tmp_path / "w" / "checkpoints").exists()
