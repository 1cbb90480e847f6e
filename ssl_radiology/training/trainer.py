"""The Lightning ``Trainer`` of a pre-training run: precision, DDP, logging, atomic and safe checkpoints.

A checkpoint is written to a temporary file in the same folder, flushed to disk and renamed over the
target (``os.replace`` is atomic on POSIX), so a ``kill -9`` or a node failure during a save leaves the
previous ``last.ckpt`` intact and loadable. Every checkpoint the trainer reads (``--resume``) goes through
``torch.load(weights_only=True)`` passed explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in the
environment cannot make a planted ``last.ckpt`` run code; a refused file is one error line naming it.
Under DDP on GPUs, BatchNorm layers become ``SyncBatchNorm`` (statistics over the global batch, as the SimCLR and
DINO recipes do), and rank 0 holds the run folder's lock (``training.lock``) for the whole fit.
"""

from __future__ import annotations

import csv
import os
import pickle
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.plugins.io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from ssl_radiology.errors import UserError, require_module
from ssl_radiology.training.callbacks import (
    CollapseGuard,
    ExportBackbone,
    Provenance,
    ResumedMetrics,
    SamplerProgress,
    StepMetrics,
)
from ssl_radiology.training.lock import RunLock, is_global_zero_process

#: precisions Lightning accepts, as the ``--precision`` / ``train.precision`` values
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; a resumed run appends to it instead."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = next(csv.reader(fh), [])


#: optional experiment trackers: name -> (module to import, pip package); metrics.csv is always written
OPTIONAL_LOGGERS = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}


def check_loggers(names: Sequence[str]) -> None:
    """Fail before any work on an unknown logger or one whose package is not installed."""
    for name in names:
        if name == "csv":
            continue
        if name not in OPTIONAL_LOGGERS:
            raise UserError(
                f"train.loggers: unknown logger '{name}' (choose from csv, {', '.join(OPTIONAL_LOGGERS)})"
            )
        module, package = OPTIONAL_LOGGERS[name]
        require_module(module, f"train.loggers={name}", package)


def make_loggers(run_dir: Path, names: Sequence[str]) -> list:
    """``metrics.csv`` (resumable) plus the optional trackers named in ``train.loggers``."""
    from lightning.pytorch import loggers as pl_loggers

    check_loggers(names)
    made: list = [ResumableCSVLogger(save_dir=run_dir, name="", version="")]
    if "tensorboard" in names:
        made.append(pl_loggers.TensorBoardLogger(save_dir=run_dir, name="tensorboard", version=""))
    if "wandb" in names:
        made.append(pl_loggers.WandbLogger(save_dir=str(run_dir), project="ssl-radiology", name=run_dir.name))
    if "mlflow" in names:
        made.append(
            pl_loggers.MLFlowLogger(experiment_name="ssl-radiology", save_dir=str(run_dir / "mlruns"))
        )
    return made


class ResumableCSVLogger(CSVLogger):
    """``metrics.csv`` in the run directory, continued (not overwritten) by ``--resume``."""

    def truncate(self, step: int) -> None:
        """Drop rows logged at ``step`` or later (steps a resumed fit redoes), keeping the header."""
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows or "step" not in rows[0]:
            return
        col = rows[0].index("step")
        kept = [row for row in rows[1:] if row[col] != "" and int(float(row[col])) < step]
        if len(kept) == len(rows) - 1:
            return
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            csv.writer(fh).writerows([rows[0], *kept])
        os.replace(tmp, path)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into ``<name>.tmp-XXXX`` beside the target, fsync, then rename over it."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load_checkpoint(
        self, path: str | os.PathLike[str], map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """``torch.load(weights_only=True)`` whatever the caller or the environment asks for."""
        return safe_load(Path(path), map_location)


def safe_load(path: Path, map_location: Any = None) -> dict[str, Any]:
    """A Lightning checkpoint restricted to tensors and plain values; refusals are one ``UserError`` line."""
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path}: refused to load: it holds pickled objects or code, not only tensors and plain values "
            f"({str(exc).strip().splitlines()[0][:160]}); delete it or resume from another checkpoint"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


class RunLockHolder(L.Callback):
    """Keeps the run folder's lock for the trainer's lifetime and releases it at teardown."""

    def __init__(self, lock: RunLock | None) -> None:
        self.lock = lock

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.lock is not None:
            self.lock.release()


class RunCheckpoint(ModelCheckpoint):
    """``step=N.ckpt`` every N steps and ``last.ckpt``, plus both at the final step of a fit.

    Lightning's ``ModelCheckpoint`` skips the end-of-fit save when ``last.ckpt`` was written at an earlier
    step, which would make ``--resume`` repeat the steps after it. A fit that stops at ``max_steps`` is
    saved at the end of its last batch, not in ``on_train_end``: by then Lightning has already counted
    the unfinished epoch as processed, and resuming from there would start the next epoch's data.
    """

    def _save_final(self, trainer: L.Trainer) -> None:
        if trainer.global_step != self._last_global_step_saved:
            candidates = self._monitor_candidates(trainer)
            self._save_topk_checkpoint(trainer, candidates)
            self._save_last_checkpoint(trainer, candidates)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if 0 < trainer.max_steps <= trainer.global_step:
            self._save_final(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.interrupted:
            self._save_final(trainer)


def _uses_gpu(accelerator: str) -> bool:
    return accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())


def check_hardware(accelerator: str, precision: str | None, devices: int | str = 1) -> None:
    """Refuse impossible ``--accelerator`` / ``--precision`` / ``--devices`` before any work starts."""
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise UserError(f"--accelerator must be one of auto, cpu, gpu, got '{accelerator}'")
    if precision is not None and str(precision) not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator in ("gpu", "cuda") and not gpus:
        raise UserError(
            f"--accelerator {accelerator}: no CUDA GPU is visible to PyTorch; use --accelerator cpu (or auto)"
        )
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    if on_gpu and isinstance(devices, int) and devices > gpus:
        raise UserError(f"--devices {devices}: only {gpus} GPU(s) visible on this machine")
    if not on_gpu and precision is not None and str(precision).startswith("16"):
        raise UserError(f"--precision {precision} needs a GPU; on CPU use 32-true or bf16-mixed")
    if on_gpu and str(precision or "").startswith("bf16") and not torch.cuda.is_bf16_supported():
        raise UserError(f"--precision {precision}: this GPU has no bfloat16 support; use 16-mixed or 32-true")


def default_precision(accelerator: str) -> str:
    """bf16 mixed precision on GPUs that support it, full fp32 elsewhere (CPU runs stay exact)."""
    if _uses_gpu(accelerator) and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def build_trainer(
    run_dir: str | os.PathLike[str],
    *,
    max_steps: int = -1,
    max_epochs: int | None = None,
    devices: int | str = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    precision: str | None = None,
    checkpoint_every: int = 500,
    keep_checkpoints: int = 3,
    clip_grad: float | None = None,
    accumulate: int = 1,
    log_every: int = 10,
    debug_seen: bool = False,
    collapse_guard: dict[str, Any] | None = None,
    loggers: Sequence[str] = ("csv",),
) -> L.Trainer:
    """Trainer writing ``metrics.csv``, ``checkpoints/step=N.ckpt`` (last ``keep_checkpoints``) and
    ``checkpoints/last.ckpt`` under ``run_dir``; DDP (with SyncBatchNorm) when more than one device or
    node (SyncBatchNorm on GPUs only: torch has no CPU implementation). Rank 0 locks ``run_dir``: a second trainer on the same folder is refused with a ``UserError``."""
    check_hardware(accelerator, precision, devices)
    run_dir = Path(run_dir)
    lock = RunLock(run_dir).acquire() if is_global_zero_process() else None
    many = num_nodes > 1 or (isinstance(devices, int) and devices > 1) or devices == -1
    checkpoints = RunCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="{step}",
        every_n_train_steps=max(int(checkpoint_every), 1),
        save_top_k=int(keep_checkpoints),
        monitor="step",
        mode="max",
        save_last=True,
        enable_version_counter=False,
    )
    return L.Trainer(
        default_root_dir=run_dir,
        accelerator=accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy="ddp" if many else "auto",
        # torch's SyncBatchNorm runs only on CUDA; CPU (gloo) DDP keeps per-process BatchNorm statistics.
        sync_batchnorm=many and _uses_gpu(accelerator),
        precision=precision or default_precision(accelerator),  # type: ignore[arg-type]
        max_steps=max_steps,
        max_epochs=max_epochs if max_epochs is not None else (-1 if max_steps > 0 else None),
        gradient_clip_val=clip_grad,
        accumulate_grad_batches=accumulate,
        logger=make_loggers(run_dir, loggers),
        log_every_n_steps=1,  # the method logs interval means only every `log_every` steps (StepMetrics)
        callbacks=[
            RunLockHolder(lock),
            SamplerProgress(run_dir if debug_seen else None),
            CollapseGuard(**(collapse_guard or {})),
            StepMetrics(log_every),
            ResumedMetrics(),
            Provenance(run_dir),
            ExportBackbone(run_dir),
            checkpoints,
        ],
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # MixedSampler shards itself
        deterministic=True if not _uses_gpu(accelerator) else "warn",
        benchmark=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
    )
