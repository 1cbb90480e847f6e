"""``scripts/gpu_check.py --smoke``: every section of the GPU check runs tiny on CPU and reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import PRETRAIN_PHANTOM, copy_configs

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_smoke_runs_every_section_on_cpu(tmp_path_factory, tmp_path):
    base = tmp_path_factory.getbasetemp()
    configs = base / "pretrain-configs"
    if not configs.exists():
        copy_configs(configs, {"phantom": PRETRAIN_PHANTOM})
    env = {
        **os.environ,
        "SSL_RAD_CONFIGS": str(configs),
        "SSL_RAD_CACHE": str(base / "pretrain-cache"),
        "CUDA_VISIBLE_DEVICES": "",
    }
    out = tmp_path / "check"
    cmd = [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--smoke", "--out", str(out)]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    sections = report["sections"]
    assert report["smoke"] and set(sections) == {
        "dino_synthetic", "simclr_synthetic", "mae_synthetic", "dino_loader", "augment", "ddp", "resume",
    }  # fmt: skip
    for name in ("dino_synthetic", "simclr_synthetic", "mae_synthetic", "dino_loader"):
        assert sections[name]["images_per_s"] > 0 and 0 <= sections[name]["data_wait_fraction"] < 1
    assert sections["augment"]["ok"] and sections["resume"]["max_abs_diff"] == 0.0  # exact on CPU
    assert "skipped" in sections["ddp"]
    table = (out / "gpu_check.md").read_text()
    assert "| dino_loader |" in table and "| resume | ok |" in table
