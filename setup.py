"""Packaging beyond pyproject.toml: the package list, which adds the top-level ``configs/`` folder.

The configs stay at the repository root (where users look for them) and are installed as the data package
``ssl_radiology.configs`` (``package-dir`` / ``package-data`` in pyproject.toml), so that
``ssl_radiology.config.config_root()`` finds them through ``importlib.resources`` in a regular install too.
Each sub-folder (``configs/eval/tasks`` …) is listed as a package of its own: setuptools maps it below
``ssl_radiology.configs`` and would otherwise warn that it is an importable folder missing from ``packages``.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
CONFIG_PACKAGES = ["ssl_radiology.configs"] + [
    "ssl_radiology.configs." + ".".join(folder.relative_to(HERE / "configs").parts)
    for folder in sorted((HERE / "configs").rglob("*"))
    if folder.is_dir() and not folder.name.startswith((".", "__"))
]

setup(packages=[*find_packages(include=["ssl_radiology", "ssl_radiology.*"]), *CONFIG_PACKAGES])
