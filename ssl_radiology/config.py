"""Settings composed from YAML groups under ``configs/`` plus dotted ``key=value`` overrides.

A run is described by one OmegaConf tree whose top-level keys are *groups* (``method``, ``data``,
``model``, ``eval``, ...). ``compose({"method": "dino"}, ["method.out_dim=4096"])`` loads
``configs/method/dino.yaml`` under ``cfg.method`` and applies the override. The resolved tree is saved into
every run directory (``config.yaml``) so that a published number can always be traced to its settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_radiology.errors import UserError

_MISSING = object()


def config_root() -> Path:
    """The ``configs/`` folder: ``$SSL_RAD_CONFIGS``, else the one installed in the package, else the
    checkout's (editable installs and source trees keep ``configs/`` beside the package)."""
    env = os.environ.get("SSL_RAD_CONFIGS")
    if env:
        root = Path(env)
        if not root.is_dir():
            raise UserError(f"SSL_RAD_CONFIGS={env} is not a folder")
        return root
    packaged = resources.files("ssl_radiology") / "configs"  # the wheel: package data ssl_radiology/configs
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / "configs"
    if not checkout.is_dir():
        raise UserError(
            f"configs folder not found (neither {packaged} nor {checkout}); reinstall ssl-radiology or set "
            "SSL_RAD_CONFIGS to a configs/ folder"
        )
    return checkout


def available(group: str) -> list[str]:
    """Names of the YAML files of one group, e.g. ``available("method") == ["dino", "mae", "simclr"]``."""
    folder = config_root() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_group(group: str, name: str) -> DictConfig:
    """Load ``configs/<group>/<name>.yaml``, or ``name`` itself when it is a path to a YAML file."""
    candidate = Path(name)
    path = candidate if candidate.suffix in {".yaml", ".yml"} and candidate.is_file() else None
    path = path or config_root() / group / f"{name}.yaml"
    if not path.is_file():
        choices = ", ".join(available(group)) or "none"
        raise UserError(f"unknown {group} '{name}' (no {path}); available: {choices}")
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise UserError(f"{path}: not a valid YAML config ({reason})") from exc
    if not isinstance(cfg, DictConfig):
        raise UserError(f"{path}: expected a mapping at the top level")
    return cfg


def apply_overrides(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """Apply ``a.b=value`` strings (values parsed as YAML: numbers, bools, lists).

    Only existing keys can be overridden: a misspelt key (``method.out_dim`` for ``method.head.out_dim``)
    would otherwise be accepted silently and the run would use the default.
    """
    items = list(overrides)
    bad = [item for item in items if "=" not in item or item.startswith("=")]
    if bad:
        raise UserError(f"overrides must look like key=value, got: {' '.join(bad)}")
    strict = cfg.copy()
    OmegaConf.set_struct(strict, True)
    for item in items:
        key = item.split("=", 1)[0]
        if OmegaConf.select(strict, key, default=_MISSING) is _MISSING:
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            node = OmegaConf.select(strict, parent) if parent else strict
            known = ", ".join(sorted(node.keys())) if isinstance(node, DictConfig) else "none"
            raise UserError(f"unknown setting '{key}' in override '{item}' (known at that level: {known})")
    try:
        merged = OmegaConf.merge(strict, OmegaConf.from_dotlist(items))
    except OmegaConfBaseException as exc:
        raise UserError(f"bad override {' '.join(items)}: {exc}") from exc
    OmegaConf.set_struct(merged, False)
    return merged  # type: ignore[return-value]


def file_overrides(path: str | os.PathLike[str]) -> list[str]:
    """A user's YAML settings file as dotted ``key=value`` overrides (``{method: {batch_size: 8}}`` →
    ``method.batch_size=8``), so a file is checked exactly like the command line (unknown keys fail)."""
    path = Path(path)
    try:
        cfg = OmegaConf.load(path)
    except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise UserError(f"--settings {path}: not a readable YAML file ({reason})") from exc
    if not isinstance(cfg, DictConfig):
        raise UserError(f"--settings {path}: expected a mapping of settings at the top level")
    items: list[str] = []

    def walk(node: Mapping, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping) and value:
                walk(value, f"{prefix}{key}.")
            else:
                items.append(f"{prefix}{key}={json.dumps(value)}")

    walk(OmegaConf.to_container(cfg, resolve=False), "")  # type: ignore[arg-type]
    return items


def compose(
    groups: Mapping[str, str], overrides: Iterable[str] = (), base: Mapping | None = None
) -> DictConfig:
    """Compose groups (each under its own key), then ``base`` values, then the dotted overrides."""
    cfg = OmegaConf.create({group: load_group(group, name) for group, name in groups.items()})
    if base:
        cfg = OmegaConf.merge(cfg, OmegaConf.create(dict(base)))
    return apply_overrides(cfg, overrides)  # type: ignore[arg-type]


def save(cfg: DictConfig, run_dir: str | os.PathLike[str], name: str = "config.yaml") -> Path:
    """Write the resolved config atomically into ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / name
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, path)
    return path
