"""What every self-supervised method shares: settings schema, optimiser, per-step schedules, device
augmentation, RNG, and per-step scalars kept on the device.

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

Per-step overhead: the loss and the monitors of every step are summed **on the device**; the host reads
them (one synchronisation) only every ``train.log_every`` steps, when they are logged as means over the
interval. A non-finite loss is therefore detected at the next logging step, not at the step it happened.
The means also form ``history``, from which ``health.json`` judges whether the run left its plateau.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightly.utils.lars import LARS
from torch import Tensor, nn

from ssl_radiology.methods.schedules import cosine, warmup_cosine
from ssl_radiology.methods.settings import Float, Int, OneOf, Pair, Rule, Section, Text, check_schema

log = logging.getLogger(__name__)

_UNIT = Float(low=0.0, high=1.0, low_open=True)
#: settings every method has; subclasses extend it with ``{**SSLMethod.schema, ...}``
BASE_SCHEMA: dict[str, Rule] = {
    "name": Text(),
    "backbone": Text(),
    "image_size": Int(low=1),
    "batch_size": Int(low=1),
    "seed": Int(low=0),
    "drop_path": Float(low=0.0, high=1.0, high_open=True),
    "clip_grad": Float(low=0.0, low_open=True, optional=True),
    "augment": Text(),
    "init": Section(optional=True),  # continued pre-training (training/init.py checks its contents)
    "optimizer.name": OneOf("adamw", "lars"),
    "optimizer.base_lr": Float(low=0.0, low_open=True),
    "optimizer.min_lr": Float(low=0.0),
    "optimizer.betas": Pair(item=Float(low=0.0, high=1.0, high_open=True), ordered=False, optional=True),
    "optimizer.momentum": Float(low=0.0, high=1.0, high_open=True, optional=True),
    "optimizer.weight_decay": Float(low=0.0),
    "optimizer.weight_decay_end": Float(low=0.0, optional=True),
    "optimizer.warmup_epochs": Float(low=0.0),
    "views.n_global": Int(low=0),
    "views.n_local": Int(low=0),
    "views.global_scale": Pair(item=_UNIT),
    "views.local_scale": Pair(item=_UNIT),
    "views.local_size": Int(low=1, optional=True),
    "views.flip_p": Float(low=0.0, high=1.0),
}


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


class DeviceScalars:
    """Running sums of 0-d tensors on their device; :meth:`pop_means` reads them with one host sync."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, Tensor]) -> None:
        for key, value in values.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def pop_means(self) -> dict[str, float]:
        """Mean of each key over the values added since the last call."""
        if not self.sums:
            return {}
        keys = sorted(self.sums)
        totals = torch.stack([self.sums[k] for k in keys]).tolist()
        means = {k: total / self.counts[k] for k, total in zip(keys, totals, strict=True)}
        self.sums, self.counts = {}, {}
        return means


class SSLMethod(L.LightningModule):
    """Base LightningModule: subclasses build their networks and implement :meth:`compute_loss`.

    ``settings`` is the resolved ``method`` config as a plain dict (see ``configs/method/*.yaml``), already
    checked against :attr:`schema` by :meth:`check_settings`. ``augment`` maps ``(views, is_ct)`` from the
    loader to normalised model input on the training device. Register a subclass with
    ``@ssl_radiology.methods.register_method("name")``.
    """

    #: state_dict prefix of the network that is exported / evaluated as "the backbone"
    backbone_prefix: ClassVar[str] = "backbone."
    #: typed rules of the ``method`` settings (dotted keys); unknown keys are refused
    schema: ClassVar[dict[str, Rule]] = BASE_SCHEMA
    #: the method only works on patch-based (ViT) backbones
    needs_patches: ClassVar[bool] = False
    #: set by ``register_method``
    method_name: ClassVar[str] = ""

    def __init__(self, settings: dict[str, Any], augment: nn.Module) -> None:
        super().__init__()
        self.save_hyperparameters({"settings": settings})
        self.settings = settings
        self.augment = augment
        self.total_steps = 1
        self.steps_per_epoch = 1
        #: schedule horizon in optimizer steps when it differs from where this fit stops (``train.stop_at_step``)
        self.schedule_steps: int | None = None
        #: collapse thresholds shared by the collapse guard and ``health.json`` (the guard overrides them)
        self.collapse_limits: dict[str, Any] = {"min_std": 0.05, "entropy_range": (0.01, 0.99)}
        #: logged means ``{"step": s, "train/loss": ..., ...}``, one row per logging interval (checkpointed)
        self.history: list[dict[str, float]] = []
        self.scalars = DeviceScalars()
        #: provenance of ``--init`` weights (``training.init.apply_init``); None for a random start
        self.init_record: dict[str, Any] | None = None
        #: logging interval in optimizer steps (``train.log_every``, set by the trainer's ``StepMetrics``)
        self.log_every = 1
        self.monitor_step = True
        #: the means of the interval that ended at this step, until ``StepMetrics`` writes them
        self.logged_row: dict[str, float] | None = None

    # ----------------------------------------------------------------- settings / construction
    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        """Every check that needs no model: types and ranges of :attr:`schema`. Subclasses add cross-field
        rules after ``super().check_settings(settings)``; each failure is a ``UserError`` naming the key."""
        check_schema(settings, cls.schema)

    @classmethod
    def build(
        cls, settings: dict[str, Any], augment: nn.Module, backbone: Callable[..., nn.Module]
    ) -> SSLMethod:
        """Construct the module; ``backbone(drop_path=None)`` makes a fresh 1-channel timm backbone."""
        return cls(settings, augment, backbone=backbone())  # type: ignore[call-arg]

    @classmethod
    def training_sources(cls, settings: dict[str, Any], train: dict[str, Any], seed: int) -> list | None:
        """Datasets a method brings itself instead of the prepared ``--data`` sources (supervised
        pre-training: a labelled task's train split); ``None``: the prepared sources."""
        return None

    # ----------------------------------------------------------------- networks / export
    def export_module(self) -> nn.Module:
        """The timm backbone whose weights are exported (``backbone.safetensors``)."""
        return self.get_submodule(self.backbone_prefix.rstrip("."))

    def compute_loss(self, views: list[Tensor], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss for one batch of augmented views, plus detached 0-d scalars to log: ``collapse/*`` monitors
        and ``health/chance_loss`` (the loss of a model that learnt nothing). Never read them on the host."""
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
        self.warn_long_warmups()

    def warmups(self) -> dict[str, float]:
        """Warm-ups given in epochs (setting -> epochs); subclasses add theirs (DINO: teacher temperature)."""
        return {"optimizer.warmup_epochs": float(self.settings["optimizer"].get("warmup_epochs", 0))}

    def warn_long_warmups(self) -> None:
        for key, epochs in self.warmups().items():
            steps = self.epochs_to_steps(epochs)
            if steps > self.total_steps and self.global_rank == 0:
                log.warning(
                    "method.%s = %g epochs is %d steps, longer than the whole run (%d steps): the schedule "
                    "never reaches its peak; lower it or train longer",
                    key,
                    epochs,
                    steps,
                    self.total_steps,
                )

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
            # not torch.manual_seed: before CUDA is initialised it queues a lazy seeding call (with a
            # formatted stack trace, ~1 ms) per accelerator type on every call; seed just what is used
            torch.random.default_generator.manual_seed(seed)
            if self.device.type == "cuda":
                torch.cuda.default_generators[self.device.index or 0].manual_seed(seed)
            yield

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        #: True on the steps whose scalars are logged: methods compute costly monitors only then
        self.monitor_step = self._log_now(batch_idx)
        with self.step_rng(batch_idx):
            with torch.no_grad():
                views = self.augment(batch["views"], batch["is_ct"])
            loss, extra = self.compute_loss(views, batch)
        self.scalars.add({"train/loss": loss, **extra})
        if self.monitor_step:
            self.flush_scalars()
        return loss

    def _log_now(self, batch_idx: int) -> bool:
        """At the last micro-batch of every ``log_every``-th optimizer step and of the run's last step."""
        trainer = self.trainer
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return False
        step = self.global_step + 1
        return step % self.log_every == 0 or step == trainer.max_steps

    def step_values(self, step: int) -> dict[str, float]:
        """Host-side values logged with the interval means: schedules (functions of the step), constants."""
        return {"train/lr": self.lr_at(step)}

    def flush_scalars(self) -> None:
        """Turn the interval's sums into means (one host sync), stop on a non-finite loss, and leave the
        row in ``logged_row`` for the trainer's ``StepMetrics`` callback to complete and write."""
        means = self.scalars.pop_means()
        if not means:
            return
        loss = means["train/loss"]
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"{self.settings['name']}: loss is {loss} in the {self.log_every} steps up to step "
                f"{self.global_step}; lower method.optimizer.base_lr or enable gradient clipping "
                "(method.clip_grad)"
            )
        means.update(self.step_values(self.global_step))
        self.history.append({"step": float(self.global_step), **means})
        self.logged_row = dict(means)

    # ----------------------------------------------------------------- health and checkpoints
    def health(self) -> dict[str, Any]:
        """``health.json`` content for the run so far (see ``ssl_radiology.training.health``)."""
        from ssl_radiology.training.health import assess

        return assess(str(self.settings["name"]), self.history, **self.collapse_limits)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ssl_radiology"] = {
            "method": str(self.settings["name"]),
            "backbone": str(self.settings["backbone"]),
            "image_size": int(self.settings["image_size"]),
            "backbone_prefix": self.backbone_prefix,
            "history": [dict(row) for row in self.history],
            "health": self.health(),
            "init": self.init_record,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the logged history of the trajectory being resumed (rows up to the checkpoint's step)."""
        saved = checkpoint.get("ssl_radiology", {}).get("history", [])
        # a resumed run keeps the provenance of the weights it was started from
        self.init_record = checkpoint.get("ssl_radiology", {}).get("init") or self.init_record
        step = int(checkpoint.get("global_step", 0))
        self.history = [dict(row) for row in saved if row["step"] < step]


def embedding_spread(features: Tensor) -> Tensor:
    """Collapse monitor: mean per-dimension std of L2-normalised embeddings, scaled by sqrt(dim).

    Spread-out embeddings on the unit sphere give ~1; a collapsed representation (all samples mapped to
    the same direction) gives 0. Computed on detached features, so it costs nothing in the backward pass.
    """
    z = nn.functional.normalize(features.detach().float(), dim=-1)
    if z.shape[0] < 2:
        return z.new_tensor(float("nan"))
    return z.std(dim=0).mean() * math.sqrt(z.shape[-1])
