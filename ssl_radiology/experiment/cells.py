"""Expand an :class:`ExperimentSpec` into cells: one API request and one output folder each.

A cell's state lives in its own folder, so an experiment killed at any point resumes by looking at the disk:
``cell.json`` (written atomically after the request finished) marks it done, ``cell-failed.json`` records
the last failure. Both hold the equivalent ``ssl-rad`` command line for humans. A cell whose request changed
since it finished (edited YAML) is *stale* and runs again; the evaluation itself skips seeds whose results
already exist, so re-running is cheap where nothing changed. The fingerprint is taken with the experiment
folder written as ``<out>``, so moving the folder (or naming it by an absolute path) keeps cells done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ssl_radiology.api.types import AnalyzeRequest, BackboneRef, EvalRequest, PretrainRequest
from ssl_radiology.experiment.spec import ExperimentSpec, Init, PretrainRun

DONE_FILE = "cell.json"
FAILED_FILE = "cell-failed.json"
#: evaluation command family -> protocol of the request
EVAL_PROTOCOL = {"knn": "knn", "linear-eval": "linear", "finetune": "finetune"}

Request = PretrainRequest | EvalRequest | AnalyzeRequest


@dataclass(frozen=True)
class Cell:
    """One runnable unit of the study."""

    id: str  # e.g. "eval/knn/dino-ct/seed-0/phantom-ct/frac-0.1"
    stage: str  # "pretrain" | "eval" | "analyze"
    request: Request
    out: Path
    root: Path  # the experiment folder (left out of the fingerprint)
    deps: tuple[str, ...] = field(default_factory=tuple)

    @property
    def command(self) -> str:
        """The equivalent ``ssl-rad`` command line, for humans."""
        return self.request.command_line()

    @property
    def fingerprint(self) -> str:
        """Hash of the request with paths inside the experiment folder written relative to it."""
        portable = json.dumps(_relative(asdict(self.request), str(self.root)), sort_keys=True, default=str)
        return hashlib.sha256(f"{type(self.request).__name__}:{portable}".encode()).hexdigest()[:16]

    def state(self) -> str:
        """``done``, ``stale`` (finished with other settings), ``failed`` or ``pending``."""
        done = self.out / DONE_FILE
        if done.is_file():
            try:
                recorded = json.loads(done.read_text()).get("fingerprint")
            except (OSError, ValueError):
                recorded = None
            return "done" if recorded == self.fingerprint else "stale"
        return "failed" if (self.out / FAILED_FILE).is_file() else "pending"


@dataclass
class Outcome:
    """What happened to one cell in this invocation (read by the runner's summary and ``report.md``)."""

    cell: Cell
    state: str  # done | skipped | failed | blocked
    seconds: float = 0.0
    error: str = ""


def _relative(value: Any, root: str) -> Any:
    """``value`` with every string path under ``root`` rewritten as ``<out>/...``."""
    if isinstance(value, dict):
        return {k: _relative(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_relative(v, root) for v in value]
    if isinstance(value, str) and (value == root or value.startswith(root.rstrip("/") + "/")):
        return "<out>" + value[len(root.rstrip("/")) :]
    return value


def _fraction_label(fraction: float) -> str:
    return f"frac-{fraction:g}"


def run_dir(out: Path, run: PretrainRun, seed: int) -> Path:
    """The folder of one pre-training replicate."""
    return out / "pretrain" / run.name / f"seed-{seed}"


def pretrain_cells(spec: ExperimentSpec, out: Path) -> list[Cell]:
    """One cell per replicate; ``init: NAME`` of an earlier entry continues its replicate of the same seed
    (or its first one)."""
    runs = {run.name: run for run in spec.pretrain}
    cells = []
    for run in spec.pretrain:
        for seed in run.seeds:
            folder = run_dir(out, run, seed)
            init, deps = run.init, ()
            if init in runs:
                parent = runs[init]
                parent_seed = seed if seed in parent.seeds else parent.seeds[0]
                init, deps = (
                    str(run_dir(out, parent, parent_seed)),
                    (f"pretrain/{parent.name}/seed-{parent_seed}",),
                )
            request = PretrainRequest(
                method=run.method, data=run.data, out=str(folder), backbone=run.backbone,
                image_size=run.image_size, seed=seed, resume=True, fraction=run.fraction,
                overrides=run.overrides, init=init, **run.args,
            )  # fmt: skip
            cells.append(Cell(f"pretrain/{run.name}/seed-{seed}", "pretrain", request, folder, out, deps))
    return cells


def init_backbones(spec: ExperimentSpec, init: Init, out: Path) -> list[tuple[BackboneRef, int | None, str]]:
    """``(backbone, pretrain seed, dependency cell id)`` per replicate of an init (one for a fixed spec)."""
    if init.run is None:
        assert init.spec is not None
        return [(BackboneRef(init.spec, spec.backbone, init.name), None, "")]
    run = next(r for r in spec.pretrain if r.name == init.run)
    return [
        (BackboneRef(str(run_dir(out, run, s)), run.backbone, init.name), s, f"pretrain/{run.name}/seed-{s}")
        for s in run.seeds
    ]


def eval_cells(spec: ExperimentSpec, out: Path) -> list[Cell]:
    cells = []
    for proto in spec.protocols:
        subsets = [(_fraction_label(f), {"fraction": f}) for f in proto.fractions]
        subsets += [(f"shots-{k}", {"shots": k}) for k in proto.shots]
        for init in spec.inits:
            if proto.inits and init.name not in proto.inits:
                continue
            if proto.name == "finetune" and (init.spec or "").startswith("raw-pixels"):
                continue  # raw pixels are a frozen-feature baseline: there are no weights to fine-tune
            for ref, pretrain_seed, dep in init_backbones(spec, init, out):
                replicate = "" if pretrain_seed is None else f"/seed-{pretrain_seed}"
                for target in proto.targets or spec.targets:
                    for label, subset in subsets:
                        cell_id = f"eval/{proto.name}/{init.name}{replicate}/{target}/{label}"
                        folder = out / cell_id
                        request = EvalRequest(
                            protocol=EVAL_PROTOCOL[proto.name], backbone=ref, data=target, out=str(folder),
                            image_size=spec.image_size, seeds=spec.seeds, pretrain_seed=pretrain_seed,
                            overrides=proto.overrides, **subset, **{**spec.eval_args, **proto.args},
                        )  # fmt: skip
                        cells.append(Cell(cell_id, "eval", request, folder, out, (dep,) if dep else ()))
    return cells


def analysis_cells(spec: ExperimentSpec, out: Path) -> list[Cell]:
    """Analyses use the first replicate of each pre-training entry."""
    inits = {init.name: init for init in spec.inits}
    cells = []
    for i, analysis in enumerate(spec.analyses):
        folder = out / "analysis" / f"{i:02d}-{analysis.kind}-{'-'.join(analysis.inits)}"
        refs, deps = [], []
        for name in analysis.inits:
            ref, _seed, dep = init_backbones(spec, inits[name], out)[0]
            refs.append(ref)
            deps += [dep] if dep else []
        request = AnalyzeRequest(
            analysis.kind,
            tuple(refs),
            analysis.data,
            out=str(folder),
            image_size=spec.image_size,
            **analysis.args,
        )
        cells.append(Cell(folder.relative_to(out).as_posix(), "analyze", request, folder, out, tuple(deps)))
    return cells


def expand_cells(spec: ExperimentSpec, out: Path) -> list[Cell]:
    """All cells in an order that respects dependencies (pre-training, evaluation, analysis)."""
    return [*pretrain_cells(spec, out), *eval_cells(spec, out), *analysis_cells(spec, out)]
