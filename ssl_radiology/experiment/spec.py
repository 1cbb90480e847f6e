"""The experiment YAML: which pre-training runs, initialisations, targets, protocols, fractions and seeds.

The file declares a grid, never how to run it: every cell is later turned into an ordinary ``ssl-rad``
command line, so a study can always be reproduced cell by cell by hand. Example (see
``configs/experiment/demo.yaml`` for a complete one)::

    backbone: vit_tiny_patch16_224
    image_size: 64
    seeds: [0, 1, 2]
    pretrain:
      dino-ct: {method: dino, data: [phantom-ct], args: {max-steps: 300}, overrides: [method.out_dim=4096]}
    inits:
      dino-ct: {run: dino-ct}          # the backbone a pre-training cell exports
      random: {spec: random}           # anything load_backbone accepts
    evaluate:
      targets: [phantom-ct, phantom-xray]
      protocols: {knn: {}, linear-eval: {}, finetune: {fractions: [1.0]}}
      fractions: [1.0, 0.1]
    baseline: random
    analyze:
      - {kind: cka, inits: [dino-ct, random], data: phantom-ct}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssl_radiology.config import apply_overrides, config_root, load_group
from ssl_radiology.errors import UserError

PROTOCOLS = ("knn", "linear-eval", "finetune")
ANALYSES = ("cka", "knn", "umap", "domains")


@dataclass(frozen=True)
class PretrainRun:
    """One pre-training cell: ``ssl-rad pretrain --method METHOD --data D ...``."""

    name: str
    method: str
    data: tuple[str, ...]
    backbone: str
    image_size: int
    args: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Init:
    """An initialisation to compare: a pre-training run of this study, or a ``load_backbone`` spec."""

    name: str
    run: str | None = None
    spec: str | None = None


@dataclass(frozen=True)
class Protocol:
    name: str
    fractions: tuple[float, ...]
    shots: tuple[int, ...]
    args: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    kind: str
    inits: tuple[str, ...]
    data: tuple[str, ...]
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExperimentSpec:
    name: str
    source: Path
    backbone: str
    image_size: int
    seeds: tuple[int, ...]
    pretrain: tuple[PretrainRun, ...]
    inits: tuple[Init, ...]
    targets: tuple[str, ...]
    protocols: tuple[Protocol, ...]
    baseline: str
    analyses: tuple[Analysis, ...]
    eval_args: dict[str, Any] = field(default_factory=dict)


def _as_tuple(value: Any) -> tuple:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def _require(mapping: dict, key: str, where: str) -> Any:
    if key not in mapping or mapping[key] is None:
        raise UserError(f"{where}: missing required setting '{key}'")
    return mapping[key]


def _resolve_path(config: str) -> Path:
    path = Path(config)
    if path.is_file():
        return path
    named = config_root() / "experiment" / f"{config}.yaml"
    if named.is_file():
        return named
    raise UserError(f"experiment config not found: {config} (looked for the file and for {named})")


def load_spec(config: str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentSpec:
    """Read and validate an experiment YAML (a path or a name under ``configs/experiment/``)."""
    path = _resolve_path(config)
    cfg = apply_overrides(load_group("experiment", str(path)), overrides)
    raw: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    where = str(path)
    backbone = str(_require(raw, "backbone", where))
    image_size = int(_require(raw, "image_size", where))
    seeds = tuple(int(s) for s in _as_tuple(_require(raw, "seeds", where)))
    if not seeds:
        raise UserError(f"{where}: 'seeds' is empty; statistics need at least 2 seeds per cell")

    pretrain = []
    for name, run in (raw.get("pretrain") or {}).items():
        run_where = f"{where}: pretrain.{name}"
        pretrain.append(
            PretrainRun(
                name=name,
                method=str(_require(run, "method", run_where)),
                data=tuple(str(d) for d in _as_tuple(_require(run, "data", run_where))),
                backbone=str(run.get("backbone", backbone)),
                image_size=int(run.get("image_size", image_size)),
                args=dict(run.get("args") or {}),
                overrides=tuple(str(o) for o in _as_tuple(run.get("overrides"))),
            )
        )
    run_names = {run.name for run in pretrain}

    inits = []
    for name, init in (raw.get("inits") or {}).items():
        init = init or {}
        if bool(init.get("run")) == bool(init.get("spec")):
            raise UserError(f"{where}: inits.{name} needs exactly one of 'run' (a pretrain name) or 'spec'")
        if init.get("run") and init["run"] not in run_names:
            raise UserError(
                f"{where}: inits.{name} refers to pretrain run '{init['run']}', "
                f"which is not declared (declared: {', '.join(sorted(run_names)) or 'none'})"
            )
        inits.append(Init(name=name, run=init.get("run"), spec=init.get("spec")))
    init_names = {init.name for init in inits}

    evaluate = raw.get("evaluate") or {}
    targets = tuple(str(t) for t in _as_tuple(evaluate.get("targets")))
    default_fractions = tuple(float(f) for f in _as_tuple(evaluate.get("fractions", [1.0])))
    default_shots = tuple(int(k) for k in _as_tuple(evaluate.get("shots")))
    protocols = []
    for name, proto in (evaluate.get("protocols") or {}).items():
        proto = proto or {}
        if name not in PROTOCOLS:
            raise UserError(f"{where}: unknown protocol '{name}' (choose from {', '.join(PROTOCOLS)})")
        protocols.append(
            Protocol(
                name=name,
                fractions=tuple(float(f) for f in _as_tuple(proto.get("fractions", default_fractions))),
                shots=tuple(int(k) for k in _as_tuple(proto.get("shots", default_shots))),
                args=dict(proto.get("args") or {}),
                overrides=tuple(str(o) for o in _as_tuple(proto.get("overrides"))),
            )
        )
    for proto in protocols:
        bad = [f for f in proto.fractions if not 0.0 < f <= 1.0]
        if bad:
            raise UserError(f"{where}: protocol {proto.name}: fractions must be in (0, 1], got {bad}")

    baseline = str(raw.get("baseline", "random"))
    if inits and baseline not in init_names:
        raise UserError(
            f"{where}: baseline '{baseline}' is not one of the inits ({', '.join(sorted(init_names))})"
        )

    analyses = []
    for i, item in enumerate(raw.get("analyze") or []):
        kind = str(_require(item, "kind", f"{where}: analyze[{i}]"))
        if kind not in ANALYSES:
            raise UserError(
                f"{where}: analyze[{i}]: unknown kind '{kind}' (choose from {', '.join(ANALYSES)})"
            )
        names = tuple(str(n) for n in _as_tuple(_require(item, "inits", f"{where}: analyze[{i}]")))
        unknown = [n for n in names if n not in init_names]
        if unknown:
            raise UserError(f"{where}: analyze[{i}] names unknown inits {unknown}")
        analyses.append(
            Analysis(
                kind=kind,
                inits=names,
                data=tuple(str(d) for d in _as_tuple(_require(item, "data", f"{where}: analyze[{i}]"))),
                args=dict(item.get("args") or {}),
            )
        )

    return ExperimentSpec(
        name=str(raw.get("name", path.stem)),
        source=path,
        backbone=backbone,
        image_size=image_size,
        seeds=seeds,
        pretrain=tuple(pretrain),
        inits=tuple(inits),
        targets=targets,
        protocols=tuple(protocols),
        baseline=baseline,
        analyses=tuple(analyses),
        eval_args=dict(evaluate.get("args") or {}),
    )
