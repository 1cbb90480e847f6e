"""Helpers shared by the test modules."""

from __future__ import annotations

import shutil
from pathlib import Path

from ssl_radiology.config import config_root

#: two cases at 64 px: enough slices for a few pre-training steps
PRETRAIN_PHANTOM = (
    "kind: phantom\ncases: 2\nseed: 0\nct_size: 64\nxray_size: 64\nimage_size: 64\nworkers: 1\n"
)
#: a phantom corpus small enough for CI but with every label present (8 cases: 2 test patients)
TINY_PHANTOM = "kind: phantom\ncases: 8\nseed: 0\nct_size: 64\nxray_size: 64\nimage_size: 32\nworkers: 1\n"


def copy_configs(dest: Path, data: dict[str, str]) -> Path:
    """A copy of ``configs/`` with some ``configs/data/<name>.yaml`` replaced; point SSL_RAD_CONFIGS at it."""
    shutil.copytree(config_root(), dest)
    for name, text in data.items():
        (dest / "data" / f"{name}.yaml").write_text(text)
    return dest
