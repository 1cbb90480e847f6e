"""Run reliability: atomic checkpoint writes, safe resume (no pickled code, whatever the environment),
one writer per run folder, metrics of the resumed trajectory only, provenance and health files, hardware
and typed settings checked before work, SyncBatchNorm under DDP."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import PRETRAIN_PHANTOM, copy_configs

from ssl_radiology.cli import main
from ssl_radiology.errors import UserError
from ssl_radiology.training import trainer as trainer_module
from ssl_radiology.training.lock import RunLock
from ssl_radiology.training.trainer import AtomicCheckpointIO


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def dies_half_way(obj, fh):
        fh.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(trainer_module.torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()

    loaded = torch.load(path, weights_only=True)
    assert loaded["global_step"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    io.save_checkpoint({"global_step": 3}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 3


# ----------------------------------------------------------------------------- runs on a tiny phantom
TINY_DINO = [
    "--backbone", "vit_tiny_patch16_224", "method.head.out_dim=64", "method.head.hidden_dim=32",
    "method.head.bottleneck_dim=16", "method.views.n_local=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    configs = base / "pretrain-configs"
    if not configs.exists():
        copy_configs(configs, {"phantom": PRETRAIN_PHANTOM})
    env = {"SSL_RAD_CONFIGS": str(configs), "SSL_RAD_CACHE": str(base / "pretrain-cache")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield env


def dino(out: Path, *extra: str, steps: int = 3) -> list[str]:
    flags = (
        "--data phantom --image-size 32 --batch-size 4 --accelerator cpu --workers 0 --checkpoint-every 100"
    )
    return ["pretrain", "--method", "dino", *flags.split(), "--max-steps", str(steps), "--out", str(out),
            *TINY_DINO, "train.log_every=1", *extra]  # fmt: skip


class Planted:
    """Pickled code: unpickling it creates a folder (the proof that code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_planted_checkpoint_is_refused_even_when_the_environment_forces_unsafe_loading(
    phantom, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "code-ran"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    last = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "payload": Planted(marker)}, last)

    with pytest.raises(UserError, match="refused to load") as info:
        AtomicCheckpointIO().load_checkpoint(last)
    assert str(last) in str(info.value) and "\n" not in str(info.value)

    assert main([*dino(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {last}: refused to load")
    assert not marker.exists()


def test_a_second_writer_on_the_same_run_folder_is_refused(phantom, tmp_path, capsys):
    run = tmp_path / "busy"
    held = RunLock(run).acquire()
    try:
        assert main(dino(run)) == 2
        assert "is in use by another ssl-rad pretrain (process" in capsys.readouterr().err
        assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()
    finally:
        held.release()
    assert main(dino(run, steps=1)) == 0  # the lock is released by the finished run too
    assert main([*dino(run, steps=2), "--resume"]) == 0


def steps_and_losses(run: Path) -> list[tuple[int, str]]:
    with (run / "metrics.csv").open(newline="") as fh:
        return [(int(row["step"]), row["train/loss"]) for row in csv.DictReader(fh)]


def test_metrics_after_a_resume_hold_exactly_the_resumed_trajectory(phantom, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    crops = "train.crops=device"  # crops cut batched on the training device: exact resume holds too
    assert main(dino(full, crops, steps=5)) == 0
    assert main(dino(split, crops, "train.stop_at_step=3", steps=5)) == 0
    # an interrupted continuation logged steps 3 and 4 but died before its next checkpoint
    with (split / "metrics.csv").open() as fh:
        header = next(csv.reader(fh))
    with (split / "metrics.csv").open("a", newline="") as fh:
        for step in (3, 4):
            csv.writer(fh).writerow(
                ["99" if k == "train/loss" else str(step) if k == "step" else "" for k in header]
            )
    assert main([*dino(split, crops, steps=5), "--resume"]) == 0
    assert steps_and_losses(split) == steps_and_losses(full)
    assert [s for s, _ in steps_and_losses(full)] == [0, 1, 2, 3, 4]


def test_run_writes_provenance_and_health_into_folder_export_and_checkpoint(phantom, tmp_path, caplog):
    run = tmp_path / "prov"
    with caplog.at_level("WARNING"):
        assert main(dino(run)) == 0
    assert "longer than the whole run" in caplog.text  # warm-up of 10 epochs vs a 3-step run
    patients = json.loads((run / "pretrain_patients.json").read_text())
    assert patients["sources"] == ["phantom"] and patients["n_images"] == 50
    assert patients["patients"] == sorted(patients["patients"]) and len(patients["patients"]) == 2
    health = json.loads((run / "health.json").read_text())
    assert health["method"] == "dino" and health["status"] in {"ok", "plateau", "collapsed"}
    assert health["chance_loss"] == pytest.approx(math.log(64))
    assert {"embedding_std_end", "teacher_entropy_end", "left_plateau"} <= set(health["checks"])
    meta = json.loads((run / "backbone.json").read_text())
    assert meta["health"] == health and meta["patients_file"] == "pretrain_patients.json"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["ssl_radiology"]["health"] == health


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "64-bit"], "--precision must be one of"),
        (["--accelerator", "gpu"], "--accelerator gpu: no CUDA GPU is visible"),
        (["method.head.out_dim=-5"], "method.head.out_dim must be a positive integer, got -5"),
        (["method.optimizer.base_lr=.nan"], "method.optimizer.base_lr must be a finite number > 0, got nan"),
        (["method.head.out_dim=64.5"], "method.head.out_dim must be a positive integer, got 64.5"),
    ],
)
def test_hardware_and_typed_settings_fail_before_any_work(phantom, tmp_path, capsys, extra, message):
    if "gpu" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    out = tmp_path / "bad"
    args = dino(out)
    args[args.index("--accelerator") : args.index("--accelerator") + 2] = []
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    assert not out.exists()


def test_batchnorm_is_synchronised_only_under_gpu_ddp(tmp_path, monkeypatch):
    """torch's SyncBatchNorm refuses CPU tensors, so CPU (gloo) DDP keeps per-process statistics."""
    from ssl_radiology.training import trainer as trainer_module

    cpu_ddp = trainer_module.build_trainer(tmp_path / "ddp", max_steps=1, devices=2, accelerator="cpu")
    assert cpu_ddp._accelerator_connector._layer_sync is None
    captured: dict = {}
    monkeypatch.setattr(trainer_module, "_uses_gpu", lambda accelerator: True)
    monkeypatch.setattr(trainer_module, "check_hardware", lambda *args, **kwargs: None)
    monkeypatch.setattr(trainer_module.L, "Trainer", lambda **kwargs: captured.update(kwargs))
    trainer_module.build_trainer(tmp_path / "gpu", max_steps=1, devices=2, accelerator="gpu")
    assert captured["sync_batchnorm"] is True
    trainer_module.build_trainer(tmp_path / "gpu1", max_steps=1, devices=1, accelerator="gpu")
    assert captured["sync_batchnorm"] is False


def test_run_lock_dies_with_its_process_and_refuses_a_file_as_run_folder(tmp_path):
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    code = (
        "import sys, time; from ssl_radiology.training.lock import RunLock; "
        f"lock = RunLock({str(run)!r}).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"in use by another ssl-rad pretrain \(process {proc.pid}\)"):
            RunLock(run).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    RunLock(run).acquire().release()  # the kernel dropped the dead process's lock
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        RunLock(tmp_path / "file").acquire()
