"""Real two-process DDP on CPU (gloo): ranks train on disjoint samples and end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from conftest import PRETRAIN_PHANTOM, copy_configs

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)
def test_two_cpu_processes_see_disjoint_samples_and_end_in_sync(tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp()
    configs = base / "pretrain-configs"
    if not configs.exists():
        copy_configs(configs, {"phantom": PRETRAIN_PHANTOM})
    env = {**os.environ, "SSL_RAD_CONFIGS": str(configs), "SSL_RAD_CACHE": str(base / "pretrain-cache")}
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "ssl_radiology",
        "pretrain",
        "--method",
        "dino",
        "--data",
        "phantom",
        "--backbone",
        "vit_tiny_patch16_224",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--max-steps",
        "3",
        "--devices",
        "2",
        "--accelerator",
        "cpu",
        "--workers",
        "0",
        "--out",
        str(run),
        "method.head.out_dim=64",
        "method.head.hidden_dim=32",
        "method.head.bottleneck_dim=16",
        "method.views.n_local=2",
        "train.debug_seen=true",
        "train.log_every=1",
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    seen = []
    for rank in (0, 1):
        rows = (run / f"seen_rank{rank}.txt").read_text().split("\n")
        seen.append([int(i) for row in rows if row for i in row.split()[1:]])
    assert len(seen[0]) == len(seen[1]) == 3 * 4
    assert not set(seen[0]) & set(seen[1])  # one epoch is 50 slices, so 24 draws never repeat a slice
    hashes = {(run / f"weights_rank{rank}.txt").read_text() for rank in (0, 1)}
    assert len(hashes) == 1
    assert (run / "backbone.safetensors").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
