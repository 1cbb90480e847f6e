"""The experiment YAML: pre-training runs and their replicates, initialisations, targets, protocols,
fractions, seeds, declared comparisons and analyses — a strict schema (unknown keys fail, naming the
nearest valid one). Example (``configs/experiment/demo.yaml`` is a complete one)::

    name: tiny
    backbone: vit_tiny_patch16_224
    image_size: 64
    seeds: [0, 1, 2]                 # evaluation seeds (subsets, heads), nested in each pre-training run
    pretrain:
      dino-ct:
        method: dino
        data: [phantom:CT]
        seeds: [0, 1, 2]             # pre-training replicates: runs pretrain/dino-ct/seed-S
        args: {max-steps: 300}       # fields of the pre-training request (flag names work)
        overrides: [method.head.out_dim=4096]
    grid:                            # optional scaling grid, expanded into pretrain runs + inits
      name: scale
      method: dino
      data: {ct: "phantom:CT", xray: "phantom:CR,DX"}
      fractions: [0.1, 1.0]
      backbones: [test_vit3]
    inits:
      dino-ct: {run: dino-ct}        # the backbone(s) a pre-training entry exports
      random: {spec: random}         # anything load_backbone accepts
    evaluate:
      targets: [phantom-ct]
      protocols: {knn: {}, linear-eval: {}, finetune: {fractions: [1.0]}}
      fractions: [1.0, 0.1]
    baseline: random
    comparisons: [[dino-ct, random]]
    endpoint: {a: dino-ct, b: random, target: phantom-ct, protocol: knn, fraction: 1.0, metric: accuracy}
    analyze:
      - {kind: cka, inits: [dino-ct, random], data: phantom-ct}

Top-level keys starting with ``x-`` hold YAML anchors (``x-short-dino: &short [...]``) and are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ssl_radiology import checks as schema
from ssl_radiology.api.pretraining import compose_settings
from ssl_radiology.api.types import AnalyzeRequest, EvalRequest, PretrainRequest
from ssl_radiology.config import apply_overrides, available, config_root, load_group
from ssl_radiology.errors import UserError
from ssl_radiology.experiment import declared
from ssl_radiology.experiment.declared import Endpoint
from ssl_radiology.experiment.grid import GridPoint, expand_grids

PROTOCOLS = ("knn", "linear-eval", "finetune")
EVAL_CONFIGS = {"knn": "knn", "linear-eval": "linear", "finetune": "finetune"}
ANALYSES = ("cka", "knn", "umap", "domains")
TOP_KEYS = (
    "name", "backbone", "image_size", "seeds", "pretrain", "grid", "inits", "evaluate", "baseline",
    "comparisons", "endpoint", "analyze",
)  # fmt: skip
PRETRAIN_KEYS = ("method", "data", "seeds", "args", "overrides", "init", "backbone", "image_size", "fraction")
#: request fields an experiment sets itself (not through ``args:``)
PRETRAIN_FIXED = (
    "method",
    "data",
    "out",
    "seed",
    "resume",
    "overrides",
    "backbone",
    "image_size",
    "fraction",
    "init",
)
EVAL_FIXED = (
    "protocol",
    "backbone",
    "data",
    "out",
    "fraction",
    "shots",
    "seeds",
    "pretrain_seed",
    "overrides",
)
ANALYZE_FIXED = ("analysis", "backbones", "data", "out", "image_size", "overrides")


@dataclass(frozen=True)
class PretrainRun:
    """One pre-training entry: ``len(seeds)`` runs (replicates) of the same settings."""

    name: str
    method: str
    data: tuple[str, ...]
    backbone: str
    image_size: int
    seeds: tuple[int, ...] = (0,)
    fraction: float = 1.0
    args: dict[str, Any] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    init: str | None = None


@dataclass(frozen=True)
class Init:
    """An initialisation to compare: a pre-training entry of this study, or a ``load_backbone`` spec."""

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
    #: the inits / targets this protocol evaluates (empty: all declared). Fine-tuning every replicate of
    #: every init is what a CPU study cannot afford, and raw-pixels has no weights to fine-tune.
    inits: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()


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
    comparisons: tuple[tuple[str, str], ...] = ()
    endpoint: Endpoint | None = None
    grid: tuple[GridPoint, ...] = ()
    resolved: dict[str, Any] = field(default_factory=dict)  # the YAML after overrides (saved with the study)


def _resolve_path(config: str) -> Path:
    path = Path(config)
    if path.is_file():
        return path
    named = config_root() / "experiment" / f"{config}.yaml"
    if named.is_file():
        return named
    raise UserError(f"experiment config not found: {config} (looked for the file and for {named})")


def _strings(value: Any, where: str) -> tuple[str, ...]:
    return tuple(schema.text(v, where) for v in schema.as_list(value))


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    seeds = tuple(schema.integer(s, where, minimum=0) for s in schema.as_list(value))
    if not seeds:
        raise UserError(f"{where}: is empty; give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{where}: repeated seeds {list(seeds)}")
    return seeds


def _pretrain(name: str, entry: Any, where: str, backbone: str, image_size: int) -> PretrainRun:
    entry = schema.mapping(entry, where, PRETRAIN_KEYS, required=("method", "data"))
    init = entry.get("init")  # a backbone spec, or the name of an earlier pretrain entry
    run = PretrainRun(
        name=name,
        method=schema.text(entry["method"], f"{where}.method"),
        data=_strings(entry["data"], f"{where}.data"),
        backbone=schema.text(entry.get("backbone", backbone), f"{where}.backbone"),
        image_size=schema.integer(entry.get("image_size", image_size), f"{where}.image_size", 1),
        seeds=_seeds(entry.get("seeds", [0]), f"{where}.seeds"),
        fraction=schema.fraction(entry.get("fraction", 1.0), f"{where}.fraction"),
        args=schema.request_args(entry.get("args"), PretrainRequest, f"{where}.args", PRETRAIN_FIXED),
        overrides=_strings(entry.get("overrides"), f"{where}.overrides"),
        init=None if init is None else schema.text(init, f"{where}.init"),
    )
    _check_sources(run.data, f"{where}.data")
    request = PretrainRequest(
        method=run.method, data=run.data, backbone=run.backbone, image_size=run.image_size,
        fraction=run.fraction, overrides=run.overrides, **run.args,
    )  # fmt: skip
    try:  # an unknown method, override key or bad setting fails here, at --dry-run, not mid-study
        cfg = compose_settings(request)
        from ssl_radiology.methods import validate  # the method's typed schema (imports torch)

        validate(OmegaConf.to_container(cfg.method, resolve=True))  # type: ignore[arg-type]
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from exc
    return run


def _inits(raw: Any, where: str, runs: set[str]) -> list[Init]:
    inits = []
    for name, init in schema.names(raw, where).items():
        init = schema.mapping(init, f"{where}.{name}", ("run", "spec"))
        if (init.get("run") is None) == (init.get("spec") is None):
            raise UserError(f"{where}.{name}: needs exactly one of 'run' (a pretrain name) or 'spec'")
        if init.get("run") is not None and init["run"] not in runs:
            raise UserError(
                f"{where}.{name}: refers to pretrain run '{init['run']}', which is not declared "
                f"(declared: {', '.join(sorted(runs)) or 'none'})"
            )
        run, spec = init.get("run"), init.get("spec")
        inits.append(Init(name, None if run is None else str(run), None if spec is None else str(spec)))
    return inits


def _protocols(evaluate: dict[str, Any], where: str) -> list[Protocol]:
    default_fractions = [
        schema.fraction(f, f"{where}.fractions") for f in schema.as_list(evaluate.get("fractions", [1.0]))
    ]
    default_shots = [schema.integer(k, f"{where}.shots", 1) for k in schema.as_list(evaluate.get("shots"))]
    protocols = []
    for name, proto in schema.names(evaluate.get("protocols"), f"{where}.protocols").items():
        at = f"{where}.protocols.{name}"
        if name not in PROTOCOLS:
            raise UserError(
                f"{where}.protocols: unknown protocol '{name}' ({schema.nearest(name, PROTOCOLS, 'protocol')})"
            )
        proto = schema.mapping(proto, at, ("fractions", "shots", "args", "overrides", "inits", "targets"))
        fractions = [
            schema.fraction(f, f"{at}.fractions")
            for f in schema.as_list(proto.get("fractions", default_fractions))
        ]
        shots = [
            schema.integer(k, f"{at}.shots", 1) for k in schema.as_list(proto.get("shots", default_shots))
        ]
        args = schema.request_args(proto.get("args"), EvalRequest, f"{at}.args", EVAL_FIXED)
        overrides = _strings(proto.get("overrides"), f"{at}.overrides")
        try:
            apply_overrides(load_group("eval", EVAL_CONFIGS[name]), overrides)
        except UserError as exc:
            raise UserError(f"{at}: {exc}") from exc
        subsets = (
            _strings(proto.get("inits"), f"{at}.inits"),
            _strings(proto.get("targets"), f"{at}.targets"),
        )
        protocols.append(Protocol(name, tuple(fractions), tuple(shots), args, overrides, *subsets))
    return protocols


def _check_targets(targets: tuple[str, ...], where: str) -> None:
    """Each target names a task YAML, a path to one, or the ``adapter:PATH`` form (checked when it runs);
    a misspelt name fails here, at --dry-run, with the nearest known task."""
    known = available("eval/tasks")
    for target in targets:
        path = Path(target).expanduser()
        if target in known or ":" in target or (path.suffix in {".yaml", ".yml"} and path.is_file()):
            continue
        raise UserError(f"{where}: unknown task '{target}' ({schema.nearest(target, known, 'task')})")


def _check_sources(values: tuple[str, ...], where: str) -> None:
    """Data names (a source of ``configs/data``, a task, ``NAME:SELECTOR``, ``NAME+test`` or an existing
    folder); a misspelt plain name fails at --dry-run, with the nearest known one."""
    known = {*available("data"), *available("eval/tasks")}
    for value in values:
        if ":" in value or value.removesuffix("+test") in known or Path(value).expanduser().exists():
            continue
        raise UserError(f"{where}: unknown data '{value}' ({schema.nearest(value, known, 'name')})")


def _check_protocol_subsets(
    protocols: list[Protocol], where: str, inits: set[str], targets: set[str]
) -> None:
    """A protocol's ``inits`` / ``targets`` must name declared ones."""
    for proto in protocols:
        for key, chosen, valid in (("inits", proto.inits, inits), ("targets", proto.targets, targets)):
            unknown = [name for name in chosen if name not in valid]
            if unknown:
                raise UserError(
                    f"{where}.protocols.{proto.name}.{key}: {', '.join(unknown)} not declared "
                    f"(declared: {', '.join(sorted(valid))})"
                )


def _analyses(raw: Any, where: str, init_names: set[str]) -> list[Analysis]:
    analyses = []
    for i, item in enumerate(schema.as_list(raw)):
        at = f"{where}[{i}]"
        item = schema.mapping(item, at, ("kind", "inits", "data", "args"), required=("kind", "inits", "data"))
        kind = schema.text(item["kind"], f"{at}.kind")
        if kind not in ANALYSES:
            raise UserError(f"{at}: unknown kind '{kind}' (choose from {', '.join(ANALYSES)})")
        names = _strings(item["inits"], f"{at}.inits")
        unknown = [n for n in names if n not in init_names]
        if unknown:
            raise UserError(
                f"{at}: names unknown inits {unknown} (declared: {', '.join(sorted(init_names))})"
            )
        args = schema.request_args(item.get("args"), AnalyzeRequest, f"{at}.args", ANALYZE_FIXED)
        data = _strings(item["data"], f"{at}.data")
        _check_sources(data, f"{at}.data")
        analyses.append(Analysis(kind, names, data, args))
    return analyses


def load_spec(config: str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentSpec:
    """Read and validate an experiment YAML (a path or a name under ``configs/experiment/``)."""
    path = _resolve_path(config)
    cfg = apply_overrides(load_group("experiment", str(path)), overrides)
    raw: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    where = str(path)
    raw = {k: v for k, v in raw.items() if not str(k).startswith("x-")}
    raw = schema.mapping(raw, where, TOP_KEYS, required=("backbone", "image_size", "seeds"))
    backbone = schema.text(raw["backbone"], f"{where}: backbone")
    image_size = schema.integer(raw["image_size"], f"{where}: image_size", 1)
    seeds = _seeds(raw["seeds"], f"{where}: seeds")

    pretrain = [
        _pretrain(name, entry, f"{where}: pretrain.{name}", backbone, image_size)
        for name, entry in schema.names(raw.get("pretrain"), f"{where}: pretrain").items()
    ]
    grid_runs, grid = expand_grids(raw.get("grid"), f"{where}: grid", image_size, _pretrain)
    pretrain += grid_runs
    run_names = [run.name for run in pretrain]
    if len(set(run_names)) != len(run_names):
        raise UserError(f"{where}: a grid run has the name of a pretrain entry: {sorted(run_names)}")
    for position, run in enumerate(pretrain):  # continued pre-training from a run of this study
        if run.init in run_names and run.init not in run_names[:position]:
            raise UserError(
                f"{where}: pretrain.{run.name}.init: run '{run.init}' must be declared before '{run.name}'"
            )
    inits = _inits(raw.get("inits"), f"{where}: inits", set(run_names))
    inits += [Init(point.init, run=point.init) for point in grid]
    init_names = {init.name for init in inits}

    evaluate = schema.mapping(
        raw.get("evaluate"), f"{where}: evaluate", ("targets", "fractions", "shots", "protocols", "args")
    )
    targets = _strings(evaluate.get("targets"), f"{where}: evaluate.targets")
    _check_targets(targets, f"{where}: evaluate.targets")
    protocols = _protocols(evaluate, f"{where}: evaluate")
    _check_protocol_subsets(protocols, f"{where}: evaluate", init_names, set(targets))
    eval_args = schema.request_args(evaluate.get("args"), EvalRequest, f"{where}: evaluate.args", EVAL_FIXED)

    baseline = schema.text(raw.get("baseline", "random"), f"{where}: baseline")
    if inits and baseline not in init_names:
        raise UserError(
            f"{where}: baseline '{baseline}' is not one of the inits ({', '.join(sorted(init_names))})"
        )
    known = {"inits": init_names, "targets": set(targets), "protocols": {p.name: p for p in protocols}}
    return ExperimentSpec(
        name=schema.text(raw.get("name", path.stem), f"{where}: name"),
        source=path,
        backbone=backbone,
        image_size=image_size,
        seeds=seeds,
        pretrain=tuple(pretrain),
        inits=tuple(inits),
        targets=targets,
        protocols=tuple(protocols),
        baseline=baseline,
        analyses=tuple(_analyses(raw.get("analyze"), f"{where}: analyze", init_names)),
        eval_args=eval_args,
        comparisons=declared.comparisons(raw.get("comparisons"), f"{where}: comparisons", init_names),
        endpoint=declared.endpoint(raw.get("endpoint"), f"{where}: endpoint", known),
        grid=tuple(grid),
        resolved=raw,
    )
