"""Settings composed from YAML groups under ``configs/`` plus dotted ``key=value`` overrides.

A run is described by one OmegaConf tree whose top-level keys are *groups* (``method``, ``data``,
``model``, ``eval``, ...). ``compose({"method": "dino"}, ["method.out_dim=4096"])`` loads
``configs/method/dino.yaml`` under ``cfg.method`` and applies the override. The resolved tree is saved into
every run directory (``config.yaml``) so that a published number can always be traced to its settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_radiology.errors import UserError

_MISSING = object()


def config_root() -> Path:
    """The ``configs/`` folder: ``$SSL_RAD_CONFIGS``, else the one beside the package source."""
    env = os.environ.get("SSL_RAD_CONFIGS")
    root = Path(env) if env else Path(__file__).resolve().parent.parent / "configs"
    if not root.is_dir():
        raise UserError(
            f"configs folder not found at {root}; set SSL_RAD_CONFIGS to the repository's configs/"
        )
    return root


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
    except (OmegaConfBaseException, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a valid YAML config ({exc})") from exc
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
