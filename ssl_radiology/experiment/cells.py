"""Expand an :class:`ExperimentSpec` into cells: one ``ssl-rad`` command line and one output folder each.

A cell's state lives in its own folder, so an experiment killed at any point resumes by looking at the disk:
``cell.json`` (written atomically after the command returned 0) marks it done, ``cell-failed.json`` records
the last failure. The command line is stored in ``cell.json``; a cell whose command line changed since it
finished (edited YAML) is *stale* and runs again — the evaluation commands themselves skip seeds whose results
already exist, so re-running is cheap where nothing changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ssl_radiology.experiment.spec import ExperimentSpec, Init

DONE_FILE = "cell.json"
FAILED_FILE = "cell-failed.json"


@dataclass(frozen=True)
class Cell:
    """One runnable unit of the study."""

    id: str  # e.g. "eval/knn/dino-ct/phantom-ct/frac-0.1"
    stage: str  # "pretrain" | "eval" | "analyze"
    argv: tuple[str, ...]  # arguments of ssl-rad, e.g. ("knn", "--checkpoint", ...)
    out: Path
    deps: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\0".join(self.argv).encode()).hexdigest()[:16]

    def state(self) -> str:
        """``done``, ``stale`` (finished with another command line), ``failed`` or ``pending``."""
        done = self.out / DONE_FILE
        if done.is_file():
            try:
                recorded = json.loads(done.read_text()).get("fingerprint")
            except (OSError, ValueError):
                recorded = None
            return "done" if recorded == self.fingerprint else "stale"
        return "failed" if (self.out / FAILED_FILE).is_file() else "pending"


def _flag_args(args: dict) -> list[str]:
    """``{"max-steps": 300, "batch_size": 64}`` → ``["--max-steps", "300", "--batch-size", "64"]``."""
    argv: list[str] = []
    for key, value in args.items():
        flag = "--" + str(key).replace("_", "-")
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        elif isinstance(value, list | tuple):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def _fraction_label(fraction: float) -> str:
    return f"frac-{fraction:g}"


def init_checkpoint(spec: ExperimentSpec, init: Init, out: Path) -> str:
    """The ``--checkpoint`` value of an init: its pre-training run folder, or its spec as written."""
    if init.run is not None:
        return str(out / "pretrain" / init.run)
    assert init.spec is not None
    return init.spec


def expand_cells(spec: ExperimentSpec, out: Path) -> list[Cell]:
    """All cells in an order that respects dependencies (pre-training, evaluation, analysis)."""
    cells: list[Cell] = []
    for run in spec.pretrain:
        argv = ["pretrain", "--method", run.method]
        for data in run.data:
            argv += ["--data", data]
        argv += ["--backbone", run.backbone, "--image-size", str(run.image_size)]
        argv += ["--out", str(out / "pretrain" / run.name), "--resume", *_flag_args(run.args), *run.overrides]
        cells.append(Cell(f"pretrain/{run.name}", "pretrain", tuple(argv), out / "pretrain" / run.name))

    inits = {init.name: init for init in spec.inits}
    seeds = ",".join(str(s) for s in spec.seeds)
    for proto in spec.protocols:
        subsets = [("--fraction", _fraction_label(f), f"{f:g}") for f in proto.fractions]
        subsets += [("--shots", f"shots-{k}", str(k)) for k in proto.shots]
        for init in spec.inits:
            deps = (f"pretrain/{init.run}",) if init.run else ()
            backbone = _init_backbone(spec, init)
            for target in spec.targets:
                for flag, label, value in subsets:
                    cell_out = out / "eval" / proto.name / init.name / target / label
                    argv = [
                        proto.name,
                        "--checkpoint",
                        init_checkpoint(spec, init, out),
                        "--name",
                        init.name,
                        "--data",
                        target,
                        "--backbone",
                        backbone,
                        "--image-size",
                        str(spec.image_size),
                        flag,
                        value,
                        "--seeds",
                        seeds,
                        "--out",
                        str(cell_out),
                        *_flag_args({**spec.eval_args, **proto.args}),
                        *proto.overrides,
                    ]
                    cell_id = f"eval/{proto.name}/{init.name}/{target}/{label}"
                    cells.append(Cell(cell_id, "eval", tuple(argv), cell_out, deps))

    for i, analysis in enumerate(spec.analyses):
        cell_out = out / "analysis" / f"{i:02d}-{analysis.kind}-{'-'.join(analysis.inits)}"
        argv = ["analyze", analysis.kind]
        deps = []
        for name in analysis.inits:
            init = inits[name]
            argv += ["--checkpoint", init_checkpoint(spec, init, out), "--name", name]
            if init.run:
                deps.append(f"pretrain/{init.run}")
        for data in analysis.data:
            argv += ["--data", data]
        argv += ["--backbone", spec.backbone, "--image-size", str(spec.image_size), "--out", str(cell_out)]
        argv += _flag_args(analysis.args)
        cells.append(
            Cell(cell_out.relative_to(out).as_posix(), "analyze", tuple(argv), cell_out, tuple(deps))
        )
    return cells


def _init_backbone(spec: ExperimentSpec, init: Init) -> str:
    if init.run is not None:
        return next(run.backbone for run in spec.pretrain if run.name == init.run)
    return spec.backbone
