"""Callbacks of a pre-training run: sampler progress, logging interval and throughput, collapse guard,
provenance (``pretrain_patients.json`` before training, ``health.json`` at the end), metrics after a
resume, backbone export.

None of them reads a device value: the method logs interval means (one host sync per ``log_every``
steps) and the callbacks work from those (``pl_module.history``) and from host-side batch entries.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L

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

    Reads the monitors the method logged last (``pl_module.history``): ``collapse/embedding_std`` (≈1 for
    spread embeddings, →0 when all samples map to one point) and, for DINO, ``collapse/teacher_entropy``
    normalised by ``log(out_dim)`` (→1: uniform teacher output, →0: one-hot for every image). Checks run at
    logging steps at least ``every_n_steps`` apart, after ``grace_steps`` (random initialisations start
    with low spread). The thresholds are also the ones ``health.json`` uses.
    """

    def __init__(
        self,
        min_std: float = 0.05,
        entropy_range: tuple[float, float] = (0.01, 0.99),
        every_n_steps: int = 50,
        grace_steps: int = 100,
    ) -> None:
        self.min_std, self.entropy_range = float(min_std), tuple(float(v) for v in entropy_range)
        self.every_n_steps, self.grace_steps = max(int(every_n_steps), 1), int(grace_steps)
        self._last_check = -(10**9)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.collapse_limits = {"min_std": self.min_std, "entropy_range": self.entropy_range}

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
        row = getattr(pl_module, "logged_row", None)
        step = trainer.global_step
        if row is None or step < self.grace_steps or step - self._last_check < self.every_n_steps:
            return
        self._last_check = step
        found = self.problems(row)
        if found:
            log.warning("step %d: representation may be collapsing: %s", step, "; ".join(found))
        row["collapse/warning"] = float(bool(found))


class StepMetrics(L.Callback):
    """Sets the method's logging interval and writes its interval rows (plus ``train/images_per_s``, all
    ranks) to the loggers, straight from host values: Lightning's ``self.log`` would re-write stale
    step values on the steps in between.

    The interval's wall time runs from the end of the previous logging step to the end of this one; the
    method has just read its scalars (one sync), so no extra device synchronisation is needed. Put this
    callback after any callback that adds to the row (``CollapseGuard``).
    """

    def __init__(self, log_every: int = 10) -> None:
        self.log_every = max(int(log_every), 1)
        self._start: float | None = None
        self._images = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.log_every = self.log_every  # type: ignore[assignment]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += int(batch["is_ct"].shape[0]) * trainer.world_size
        row = getattr(pl_module, "logged_row", None)
        if row is None:
            return
        now = time.perf_counter()
        if self._start is not None and now > self._start:
            row["train/images_per_s"] = self._images / (now - self._start)
        self._start, self._images = now, 0
        row["epoch"] = trainer.current_epoch
        step = int(pl_module.history[-1]["step"])  # type: ignore[attr-defined]
        for logger in trainer.loggers:
            logger.log_metrics(row, step=step)
            logger.save()
        pl_module.logged_row = None  # type: ignore[assignment]


class ResumedMetrics(L.Callback):
    """After a resume, ``metrics.csv`` keeps only the rows of the trajectory being continued.

    Rows logged after the checkpoint's step (by the interrupted fit, whose last steps are redone) are
    dropped before this fit logs anything, so every step appears once and belongs to the final weights.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        for logger in trainer.loggers:  # trainer.ResumableCSVLogger (duck-typed: trainer imports this module)
            truncate = getattr(logger, "truncate", None)
            if callable(truncate):
                truncate(trainer.global_step)


def _write_json(path: Path, content: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


PATIENTS_FILE = "pretrain_patients.json"
HEALTH_FILE = "health.json"


class Provenance(L.Callback):
    """``pretrain_patients.json`` before training: which patients the pre-training data holds.

    ``{"patients": [sorted patient_key], "n_images": int, "sources": [...]}`` from the manifests of the
    training sources, so evaluation can refuse a test set that shares patients with pre-training.
    ``sources`` are the ``--data`` names when the data module knows them.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        data = trainer.datamodule
        sources: Sequence[Any] = getattr(data, "sources", [])
        names = getattr(data, "names", None) or [str(getattr(s, "root", "?")) for s in sources]
        _write_json(self.run_dir / PATIENTS_FILE, patients_record(sources, names))


def patients_record(sources: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """The provenance record of ``pretrain_patients.json`` for PreparedDataset-like sources."""
    keys: set[str] = set()
    images = 0
    for source in sources:
        manifest = source.manifest
        images += len(manifest)
        if "patient_key" in manifest:
            keys.update(str(k) for k in manifest["patient_key"].dropna().unique() if str(k))
    return {"patients": sorted(keys), "n_images": images, "sources": list(names)}


class ExportBackbone(L.Callback):
    """On fit end, rank 0 writes ``health.json`` and ``backbone.safetensors`` + ``backbone.json`` (which
    repeats the health verdict and names the patients file) into the run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.interrupted:
            return
        from ssl_radiology.models import export_backbone

        health = pl_module.health()  # type: ignore[operator]
        _write_json(self.run_dir / HEALTH_FILE, health)
        if health["status"] in ("collapsed", "plateau"):
            log.warning("pre-training health: %s (%s)", health["status"], health["message"])
        settings = pl_module.settings  # type: ignore[attr-defined]
        weights = export_backbone(
            pl_module.export_module(),  # type: ignore[operator]
            self.run_dir,
            backbone_name=str(settings["backbone"]),
            image_size=int(settings["image_size"]),
            method=str(settings["name"]),
        )
        meta_path = weights.with_suffix(".json")
        meta = json.loads(meta_path.read_text())
        meta["health"] = health
        meta["init"] = getattr(pl_module, "init_record", None)  # --init provenance (training/init.py)
        if (self.run_dir / PATIENTS_FILE).is_file():
            meta["patients_file"] = PATIENTS_FILE
        _write_json(meta_path, meta)
        log.info("exported %s backbone to %s", settings["backbone"], self.run_dir)
