"""Packaging beyond pyproject.toml: the package list, which adds the top-level ``configs/`` folder.

The configs stay at the repository root (where users look for them) and are installed as the data package
``ssl_radiology.configs`` (``package-dir`` / ``package-data`` in pyproject.toml), so that
``ssl_radiology.config.config_root()`` finds them through ``importlib.resources`` in a regular install too.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["ssl_radiology", "ssl_radiology.*"]), "ssl_radiology.configs"])
