"""A regular (non-editable) wheel carries the configs: ``ssl-rad experiment demo --dry-run`` works from it,
outside the checkout. The wheel is built from a copy of the sources, so the checkout stays untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from ssl_radiology.experiment import expand_cells, load_spec

REPO = Path(__file__).resolve().parent.parent


def test_wheel_ships_configs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("configs", "ssl_radiology"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {
        n.split("ssl_radiology/configs/", 1)[1] for n in names if n.startswith("ssl_radiology/configs/")
    }
    expected = {p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    assert expected <= shipped

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    run = tmp_path / "elsewhere"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SSL_RAD_CONFIGS"}
    env["PYTHONPATH"] = str(site)
    probe = "import ssl_radiology.config as c; print(c.__file__); print(c.config_root())"
    where = subprocess.run([sys.executable, "-c", probe], cwd=run, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    module, root = where.stdout.split()
    assert module.startswith(str(site)) and root == str(site / "ssl_radiology" / "configs")
    dry = subprocess.run(
        [sys.executable, "-m", "ssl_radiology", "experiment", "demo", "--dry-run"],
        cwd=run, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    cells = expand_cells(load_spec("demo"), Path("experiments/demo"))  # the same study from the checkout
    assert f"{len(cells)} cells" in dry.stdout and cells[0].id in dry.stdout
