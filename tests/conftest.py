"""Helpers shared by the test modules."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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


@contextmanager
def phantom_configs(base: Path, name: str, phantom: str, cache: str) -> Iterator[dict[str, str]]:
    """Point SSL_RAD_CONFIGS at a configs copy whose phantom is ``phantom`` and SSL_RAD_CACHE at
    ``base/cache`` (shared by the modules that name the same cache, so the phantom is prepared once)."""
    configs = base / f"{name}-configs"
    if not configs.exists():
        copy_configs(configs, {"phantom": phantom})
    env = {"SSL_RAD_CONFIGS": str(configs), "SSL_RAD_CACHE": str(base / cache)}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield env


@pytest.fixture(scope="module")
def phantom_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A 2-case phantom at 64 px for pre-training tests, shared through one cache across modules."""
    with phantom_configs(
        tmp_path_factory.getbasetemp(), "pretrain", PRETRAIN_PHANTOM, "pretrain-cache"
    ) as env:
        yield env
