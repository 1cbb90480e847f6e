"""What every self-supervised method shares: optimiser, per-step schedules, device augmentation, RNG.

Design choices that make a run reproducible and resumable bit for bit:

* **Schedules are functions of the optimizer step** (``methods.schedules``); learning rate and weight decay
  are written into the param groups at the start of each step, so there is no scheduler object whose state
  could drift on resume.
* **Randomness of a training step is private and seeded by ``(seed, rank, step, micro-batch)``.** Device
  augmentation, masking and drop-path run inside ``torch.random.fork_rng`` with that seed, so the random
  numbers of step *k* are the same whether the run was interrupted before *k* or not, and no RNG state has
  to be saved per rank.
* **Global batch** = per-device batch × devices × nodes × gradient accumulation; the learning rate follows
  the linear scaling rule ``base_lr × global_batch / 256`` of the DINO / MAE / SimCLR recipes.
* ``hparams`` hold only plain Python types, so a checkpoint loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightly.utils.lars import LARS
from torch import Tensor, nn

from ssl_radiology.methods.schedules import cosine, warmup_cosine


def step_seed(seed: int, rank: int, step: int, micro_batch: int) -> int:
    """A well-mixed 63-bit seed for one training step of one rank (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence([seed, rank, step, micro_batch]).generate_state(2, np.uint64)[0] >> 1)


def param_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Split trainable parameters into decayed weights and undecayed biases / norm / 1-D parameters.

    Decaying LayerNorm / BatchNorm scales and biases hurts ViT and ResNet training (DINO, MAE and timm all
    exclude them); the ``decay`` flag tells the step hook which group follows the weight-decay schedule.
    """
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "decay": True}, {"params": no_decay, "decay": False, "weight_decay": 0.0}]


class SSLMethod(L.LightningModule):
    """Base LightningModule: subclasses build their networks and implement :meth:`compute_loss`.

    ``settings`` is the resolved ``method`` config as a plain dict (see ``configs/method/*.yaml``).
    ``augment`` maps ``(views, is_ct)`` from the loader to normalised model input on the training device.
    """

    #: state_dict prefix of the network that is exported / evaluated as "the backbone"
    backbone_prefix: ClassVar[str] = "backbone."

    def __init__(self, settings: dict[str, Any], augment: nn.Module) -> None:
        super().__init__()
        self.save_hyperparameters({"settings": settings})
        self.settings = settings
        self.augment = augment
        self.total_steps = 1
        self.steps_per_epoch = 1
        #: schedule horizon in optimizer steps when it differs from where this fit stops (``train.stop_at_step``)
        self.schedule_steps: int | None = None

    # ----------------------------------------------------------------- networks / export
    def export_module(self) -> nn.Module:
        """The timm backbone whose weights are exported (``backbone.safetensors``)."""
        return self.get_submodule(self.backbone_prefix.rstrip("."))

    def compute_loss(self, views: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss for one batch of augmented views plus extra scalars to log (collapse monitors, ...)."""
        raise NotImplementedError

    # ----------------------------------------------------------------- schedules
    @property
    def global_batch(self) -> int:
        trainer = self.trainer
        return int(self.settings["batch_size"]) * trainer.world_size * trainer.accumulate_grad_batches

    def on_train_start(self) -> None:
        """Fix the schedule horizon: ``schedule_steps``, else ``max_epochs`` × steps per epoch, else max_steps.

        The horizon must not depend on where a fit stops, or a run split into several jobs would follow a
        different learning-rate curve than an uninterrupted one.
        """
        trainer = self.trainer
        batches = trainer.num_training_batches
        per_epoch = int(batches) // trainer.accumulate_grad_batches if math.isfinite(batches) else 0
        if self.schedule_steps:
            total = self.schedule_steps
        elif per_epoch and trainer.max_epochs is not None and trainer.max_epochs > 0:
            total = trainer.max_epochs * per_epoch
        else:
            total = int(trainer.estimated_stepping_batches)
        self.total_steps = max(int(total), 1)
        self.steps_per_epoch = max(per_epoch, 1) if per_epoch else self.total_steps

    def epochs_to_steps(self, epochs: float) -> int:
        """Recipes give warm-ups in epochs; the schedules work in optimizer steps."""
        return round(float(epochs) * self.steps_per_epoch)

    def lr_at(self, step: int) -> float:
        opt = self.settings["optimizer"]
        peak = float(opt["base_lr"]) * self.global_batch / 256.0
        warmup = self.epochs_to_steps(opt.get("warmup_epochs", 0))
        return warmup_cosine(step, self.total_steps, peak, float(opt.get("min_lr", 0.0)), warmup)

    def weight_decay_at(self, step: int) -> float:
        opt = self.settings["optimizer"]
        start = float(opt.get("weight_decay", 0.0))
        end = opt.get("weight_decay_end")
        return start if end is None else cosine(step, self.total_steps, start, float(end))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = self.settings["optimizer"]
        groups = param_groups(self)
        name = str(opt.get("name", "adamw")).lower()
        if name == "adamw":
            betas = tuple(float(b) for b in opt.get("betas", (0.9, 0.999)))
            return torch.optim.AdamW(groups, lr=self.lr_at(0), betas=betas)  # type: ignore[arg-type]
        if name == "lars":
            return LARS(groups, lr=self.lr_at(0), momentum=float(opt.get("momentum", 0.9)))
        raise ValueError(f"method.optimizer.name: unknown optimizer '{name}' (adamw or lars)")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        lr, wd = self.lr_at(step), self.weight_decay_at(step)
        optimizer = self.optimizers(use_pl_optimizer=False)
        for group in optimizer.param_groups:  # type: ignore[union-attr]
            group["lr"] = lr
            if group.get("decay"):
                group["weight_decay"] = wd

    # ----------------------------------------------------------------- the step
    @contextmanager
    def step_rng(self, batch_idx: int) -> Iterator[None]:
        """Fork the global RNG and seed it from ``(seed, rank, step, micro-batch)`` for this step only."""
        devices = [self.device] if self.device.type == "cuda" else []
        # the micro-batch within the optimizer step, not batch_idx: Lightning may renumber batches on resume
        micro = batch_idx % self.trainer.accumulate_grad_batches
        seed = step_seed(int(self.settings.get("seed", 0)), self.global_rank, self.global_step, micro)
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.manual_seed(seed)
            yield

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        with self.step_rng(batch_idx):
            with torch.no_grad():
                views = self.augment(batch["views"], batch["is_ct"])
            loss, extra = self.compute_loss(views)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"{self.settings['name']}: loss is {loss.item()} at step {self.global_step}; lower "
                "method.optimizer.base_lr or enable gradient clipping (method.clip_grad)"
            )
        batch_size = int(batch["is_ct"].shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train/lr", self.lr_at(self.global_step), batch_size=batch_size)
        for key, value in extra.items():
            self.log(key, value, batch_size=batch_size)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ssl_radiology"] = {
            "method": str(self.settings["name"]),
            "backbone": str(self.settings["backbone"]),
            "image_size": int(self.settings["image_size"]),
            "backbone_prefix": self.backbone_prefix,
        }


def embedding_spread(features: Tensor) -> Tensor:
    """Collapse monitor: mean per-dimension std of L2-normalised embeddings, scaled by sqrt(dim).

    Spread-out embeddings on the unit sphere give ~1; a collapsed representation (all samples mapped to
    the same direction) gives 0. Computed on detached features, so it costs nothing in the backward pass.
    """
    z = nn.functional.normalize(features.detach().float(), dim=-1)
    if z.shape[0] < 2:
        return z.new_tensor(float("nan"))
    return z.std(dim=0).mean() * math.sqrt(z.shape[-1])
