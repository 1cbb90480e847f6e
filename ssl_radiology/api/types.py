"""Request objects (what to do) and result records (what happened) of the :mod:`ssl_radiology.api`.

These are plain dataclasses with no heavy imports, so that commands, experiment cells, notebooks and tests
can build and store them cheaply; a request is everything a run needs, independent of the command line.
Validation that needs no data happens here (``check()``), so a bad value fails before any heavy work.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ssl_radiology.errors import UserError

EVAL_PROTOCOLS = ("knn", "linear", "finetune")
LINEAR_HEADS = ("sgd", "logreg", "both")
SUBGROUP_ALIASES = {"age": "age_band", "age_band": "age_band", "sex": "sex", "site": "site"}


def default_name(spec: str, architecture: str | None) -> str:
    """A readable condition name: ``random-resnet18``, ``imagenet-resnet18``, or the run / file stem."""
    kind = spec.split(":", 1)[0]
    if kind in {"random", "imagenet", "raw-pixels"}:
        return f"{kind}-{architecture}" if architecture else kind
    path = Path(spec)
    if path.name in {"last.ckpt", "backbone.safetensors"} or path.parent.name == "checkpoints":
        return path.parents[1 if path.parent.name == "checkpoints" else 0].name
    return path.stem if path.suffix else path.name


@dataclass(frozen=True)
class BackboneRef:
    """A backbone to evaluate or analyse, shared by evaluation and analysis.

    ``spec`` is anything ``models.load_backbone`` accepts (run dir, ``.ckpt``, ``.safetensors``, ``random``,
    ``imagenet[:tag|file]``, ...); ``architecture`` the timm name where the spec does not carry one; ``seed``
    draws random weights (analysis; evaluation redraws random weights per evaluation seed).
    """

    spec: str
    architecture: str | None = None
    name: str | None = None
    seed: int = 0

    @property
    def label(self) -> str:
        return self.name or default_name(self.spec, self.architecture)

    @property
    def is_random(self) -> bool:
        return self.spec == "random"


def _check_out(out: str | None) -> None:
    """An output folder that is a file fails now, not after minutes of work."""
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UserError(f"--out {out} is a file; give a folder")


def _argv(command: list[str], flags: dict[str, Any], overrides: tuple[str, ...]) -> str:
    """The equivalent ``ssl-rad`` command line, for humans (cell.json, logs); tests parse it back."""
    argv = list(command)
    for flag, value in flags.items():
        if value is None or value is False or value == ():
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, list | tuple):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return shlex.join(["ssl-rad", *argv, *overrides])


@dataclass(frozen=True)
class PrepareRequest:
    """Decode sources into a prepared dataset (``ssl-rad prepare``); fields as ``data.prepare_dataset``."""

    sources: tuple[str, ...]
    out: str
    image_size: int = 256
    workers: int | None = None
    modality: str | None = None
    salt: str | None = None
    chunk_files: int | None = None  # None: data.prepare.CHUNK_FILES
    progress: bool = True
    keep_paths: bool = False  # also write paths.csv (file_key -> relative path); identifying
    max_image_mb: float | None = None  # refuse larger decoded images (None: sized from memory / workers)
    verify: bool = False  # full checksums of finished chunks
    shard: tuple[int, int] | None = None  # (part, parts) of a job split over machines
    merge: bool = False  # merge the parts' manifests once every part is done


@dataclass(frozen=True)
class PretrainRequest:
    """One pre-training run (``ssl-rad pretrain``). ``None`` means: the value in the composed config.

    ``fraction`` keeps that share of each source's patients (seeded by ``seed``, patient level) for
    pre-training-scale studies.
    """

    method: str
    data: tuple[str, ...]
    out: str | None = None
    weights: tuple[float, ...] | None = None
    backbone: str | None = None
    image_size: int | None = None
    batch_size: int | None = None
    max_steps: int | None = None
    max_epochs: int | None = None
    seed: int = 0
    resume: bool = False
    devices: int | None = None
    num_nodes: int | None = None
    accelerator: str | None = None
    precision: str | None = None
    workers: int | None = None
    checkpoint_every: int | None = None
    fraction: float = 1.0
    init: str | None = None  # continued pre-training: start from this backbone spec (training/init.py)
    export_heads: bool = False  # also export the whole method (heads, teacher) as method.safetensors
    overrides: tuple[str, ...] = ()

    def check(self) -> None:
        if not self.data:
            raise UserError("pretrain: give at least one --data source")
        if not 0.0 < float(self.fraction) <= 1.0:
            raise UserError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.max_steps is not None and self.max_epochs is not None:
            raise UserError("--max-steps and --max-epochs are exclusive; give one")
        if self.seed < 0:
            raise UserError(f"--seed must be ≥ 0, got {self.seed}")
        _check_out(self.out)

    def command_line(self) -> str:
        argv = ["pretrain", "--method", self.method]
        for source in self.data:
            argv += ["--data", source]
        skip = {"method", "data", "overrides"} | ({"fraction"} if self.fraction == 1.0 else set())
        flags = {
            f"--{f.name.replace('_', '-')}": getattr(self, f.name) for f in fields(self) if f.name not in skip
        }
        return _argv(argv, flags, self.overrides)


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation of one backbone on one task over several seeds (``ssl-rad knn/linear-eval/finetune``).

    ``pretrain_seed`` names the pre-training replicate the backbone came from (``None`` for a fixed
    checkpoint such as ImageNet weights); it travels into every result row.
    """

    protocol: str
    backbone: BackboneRef
    data: str
    out: str = "eval-results"
    image_size: int | None = None
    fraction: float = 1.0
    shots: int | None = None
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    ood_split: bool = False
    subgroups: tuple[str, ...] = ()
    device: str = "auto"
    feature_cache: str | None = None
    head: str | None = None
    pretrain_seed: int | None = None
    allow_overlap: bool = False  # evaluate even if test patients were seen in pre-training
    overrides: tuple[str, ...] = ()

    def check(self) -> None:
        if self.protocol not in EVAL_PROTOCOLS:
            raise UserError(f"unknown evaluation protocol '{self.protocol}'; use {', '.join(EVAL_PROTOCOLS)}")
        if self.head is not None and (self.protocol != "linear" or self.head not in LINEAR_HEADS):
            raise UserError(f"--head {self.head}: linear evaluation takes {', '.join(LINEAR_HEADS)}")
        if not self.seeds:
            raise UserError("--seeds is empty")
        if min(self.seeds) < 0 or (self.pretrain_seed is not None and self.pretrain_seed < 0):
            raise UserError(
                f"seeds must be ≥ 0, got --seeds {list(self.seeds)} --pretrain-seed {self.pretrain_seed}"
            )
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"--image-size must be ≥ 1, got {self.image_size}")
        if self.shots is not None and self.shots < 1:
            raise UserError(f"--shots must be ≥ 1, got {self.shots}")
        if self.shots is None and not 0.0 < float(self.fraction) <= 1.0:
            raise UserError(f"--fraction must be in (0, 1], got {self.fraction}")
        unknown = [s for s in self.subgroups if s not in SUBGROUP_ALIASES]
        if unknown:
            raise UserError(f"--subgroups: unknown {', '.join(unknown)} (choose from sex, age, site)")
        if self.backbone.is_random and not self.backbone.architecture:
            raise UserError("--checkpoint random needs --backbone NAME")
        _check_out(self.out)

    @property
    def subgroup_columns(self) -> list[str]:
        return [SUBGROUP_ALIASES[s] for s in self.subgroups]

    def command_line(self) -> str:
        """Generic over the fields (``--field-name value``), so a field added later shows up too."""
        command = {"knn": "knn", "linear": "linear-eval", "finetune": "finetune"}[self.protocol]
        ref = self.backbone
        flags: dict[str, Any] = {"--checkpoint": ref.spec, "--backbone": ref.architecture, "--name": ref.name}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in {"protocol", "backbone", "overrides"} or (f.name == "fraction" and self.shots):
                continue
            flags[f"--{f.name.replace('_', '-')}"] = None if (f.name, value) == ("device", "auto") else value
        return _argv([command], flags, self.overrides)


@dataclass(frozen=True)
class CompareRequest:
    """Summarise evaluation result folders against a baseline (``ssl-rad compare``)."""

    results: tuple[str, ...]
    out: str = "comparison"
    baseline: str | None = None
    metrics: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()  # declared paired comparisons a − b (one Holm family)
    bootstrap: int = 2000  # patient-level bootstrap resamples

    def check(self) -> None:
        if self.bootstrap < 0:
            raise UserError(f"--bootstrap must be ≥ 0, got {self.bootstrap}")
        for a, b in self.pairs:
            if a == b:
                raise UserError(f"--pair {a},{b} compares a condition with itself")


@dataclass(frozen=True)
class AnalyzeRequest:
    """A feature-space analysis (``ssl-rad analyze``): ``analysis`` in cka, knn, umap, domains."""

    analysis: str
    backbones: tuple[BackboneRef, ...]
    data: tuple[str, ...]
    out: str = "analysis-results"
    image_size: int | None = None
    max_samples: int = 300
    seed: int = 0
    per_layer: bool = False
    pooling: str = "auto"  # layer outputs -> vectors (layer CKA, per-layer kNN): auto | mean | cls | flat
    device: str = "auto"
    feature_cache: str | None = None
    overrides: tuple[str, ...] = ()

    def command_line(self) -> str:
        """Options that differ from their defaults, plus ``--out``."""
        argv = ["analyze", self.analysis]
        for ref in self.backbones:
            argv += ["--checkpoint", ref.spec, "--name", ref.label]
        for source in self.data:
            argv += ["--data", source]
        default = AnalyzeRequest(self.analysis, (), ())
        flags: dict[str, Any] = {"--backbone": self.backbones[0].architecture if self.backbones else None}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in {"analysis", "backbones", "data", "overrides"} and (
                f.name == "out" or value != getattr(default, f.name)
            ):
                flags[f"--{f.name.replace('_', '-')}"] = value
        return _argv(argv, flags, self.overrides)


@dataclass
class PretrainResult:
    run_dir: Path
    method: str
    backbone: str
    steps: int


@dataclass
class EvalResult:
    """Where the rows went and which seeds ran now (``done``) or were finished before (``skipped``)."""

    out: Path
    results_csv: Path
    done: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    headline: dict[int, dict[str, float]] = field(default_factory=dict)
