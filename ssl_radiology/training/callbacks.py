"""Callbacks of a pre-training run: sampler progress, collapse guard, throughput, backbone export."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

log = logging.getLogger(__name__)


class SamplerProgress(L.Callback):
    """Tells the sampler how many samples of the epoch this rank has *trained on* (not just prefetched).

    The count is what a checkpoint needs to resume exactly: loader workers and Lightning's fetcher run
    ahead, so the sampler's own iteration position overstates progress. With ``seen_dir`` set (debug
    setting ``train.debug_seen``), every rank appends the dataset indices it trained on to
    ``seen_dir/seen_rank{r}.txt`` and at the end writes a hash of its weights to
    ``seen_dir/weights_rank{r}.txt`` — used to check that DDP ranks see disjoint samples and stay in sync.
    """

    def __init__(self, seen_dir: str | Path | None = None) -> None:
        self.seen_dir = Path(seen_dir) if seen_dir else None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        sampler = trainer.datamodule.sampler  # type: ignore[attr-defined]
        sampler.consumed = int(batch["position"].max()) + 1
        if self.seen_dir is not None:
            indices = " ".join(str(int(i)) for i in batch["index"].tolist())
            with open(self.seen_dir / f"seen_rank{trainer.global_rank}.txt", "a") as fh:
                fh.write(f"{sampler.epoch} {indices}\n")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.seen_dir is not None:
            from ssl_radiology.models import weights_hash

            (self.seen_dir / f"weights_rank{trainer.global_rank}.txt").write_text(
                weights_hash(pl_module) + "\n"
            )


class CollapseGuard(L.Callback):
    """Warns when the representation collapses, and logs a 0/1 ``collapse/warning`` metric.

    Reads the monitors the methods log every step: ``collapse/embedding_std`` (≈1 for spread embeddings,
    →0 when all samples map to one point) and, for DINO, ``collapse/teacher_entropy`` normalised by
    ``log(out_dim)`` (→1: uniform teacher output, →0: one-hot for every image). Checks run every
    ``every_n_steps`` after ``grace_steps`` (random initialisations start with low spread).
    """

    def __init__(
        self,
        min_std: float = 0.05,
        entropy_range: tuple[float, float] = (0.01, 0.99),
        every_n_steps: int = 50,
        grace_steps: int = 100,
    ) -> None:
        self.min_std, self.entropy_range = min_std, entropy_range
        self.every_n_steps, self.grace_steps = max(int(every_n_steps), 1), int(grace_steps)

    def problems(self, metrics: dict[str, Any]) -> list[str]:
        found = []
        std = metrics.get("collapse/embedding_std")
        if std is not None and float(std) < self.min_std:
            found.append(f"embedding std {float(std):.4f} < {self.min_std}")
        entropy = metrics.get("collapse/teacher_entropy")
        low, high = self.entropy_range
        if entropy is not None and not low < float(entropy) < high:
            found.append(f"teacher entropy {float(entropy):.4f} outside ({low}, {high})")
        return found

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step < self.grace_steps or step % self.every_n_steps:
            return
        found = self.problems(trainer.callback_metrics)
        if found:
            log.warning("step %d: representation may be collapsing: %s", step, "; ".join(found))
        pl_module.log("collapse/warning", float(bool(found)), batch_size=1)


class Throughput(L.Callback):
    """Logs global training images per second (all ranks), timed from batch start to batch end."""

    def __init__(self) -> None:
        self._start = 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        elapsed = time.perf_counter() - self._start
        images = int(batch["is_ct"].shape[0]) * trainer.world_size
        if elapsed > 0 and math.isfinite(elapsed):
            pl_module.log("train/images_per_s", images / elapsed, batch_size=1)


class ExportBackbone(L.Callback):
    """On fit end, rank 0 writes ``backbone.safetensors`` + ``backbone.json`` into the run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.interrupted:
            return
        from ssl_radiology.models import export_backbone

        settings = pl_module.settings  # type: ignore[attr-defined]
        export_backbone(
            pl_module.export_module(),  # type: ignore[operator]
            self.run_dir,
            backbone_name=str(settings["backbone"]),
            image_size=int(settings["image_size"]),
            method=str(settings["name"]),
        )
        log.info("exported %s backbone to %s", settings["backbone"], self.run_dir)
