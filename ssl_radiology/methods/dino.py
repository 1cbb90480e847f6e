"""DINO (Caron et al. 2021): self-distillation with a momentum teacher, multi-crop, centring.

Networks, loss and EMA come from lightly (``DINOProjectionHead``, ``DINOLoss``, ``update_momentum``).
``DINOLoss`` keeps the centre as a buffer (saved in checkpoints) and all-reduces the batch centre across
ranks (``lightly.models.modules.center.center_mean``), so DDP runs centre on the global batch.
The teacher sees only the global crops; the student sees all crops. The teacher backbone is what gets
exported (the DINO paper evaluates the teacher).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import Tensor, nn

from ssl_radiology.errors import UserError
from ssl_radiology.methods import register_method
from ssl_radiology.methods.base import SSLMethod, embedding_spread
from ssl_radiology.methods.schedules import cosine, linear_warmup
from ssl_radiology.methods.settings import Bool, Float, Int, Rule, check_views

_PROBABILITY = Float(low=0.0, high=1.0)


@register_method("dino")
class DINO(SSLMethod):
    backbone_prefix = "teacher_backbone."
    schema: ClassVar[dict[str, Rule]] = {
        **SSLMethod.schema,
        "freeze_last_layer_epochs": Float(low=0.0),
        "head.hidden_dim": Int(low=1),
        "head.bottleneck_dim": Int(low=1),
        "head.out_dim": Int(low=1),
        "head.norm_last_layer": Bool(),
        "head.batch_norm": Bool(),
        "teacher.momentum": _PROBABILITY,
        "teacher.momentum_end": _PROBABILITY,
        "teacher.warmup_temp": Float(low=0.0, low_open=True),
        "teacher.temp": Float(low=0.0, low_open=True),
        "teacher.temp_warmup_epochs": Float(low=0.0),
        "student_temp": Float(low=0.0, low_open=True),
        "center_momentum": _PROBABILITY,
    }

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        """The teacher sees the global crops, the loss pairs each with every other crop: ≥ 1 global, ≥ 2 crops."""
        super().check_settings(settings)
        check_views(settings, n_global=(1, None), n_local=(0, None))
        views = settings["views"]
        if int(views["n_global"]) + int(views["n_local"]) < 2:
            raise UserError("method.views: DINO needs at least 2 crops (n_global + n_local)")

    @classmethod
    def build(cls, settings: dict[str, Any], augment: nn.Module, backbone: Callable[..., nn.Module]) -> DINO:
        return cls(settings, augment, student=backbone(), teacher=backbone(drop_path=0.0))

    def __init__(
        self, settings: dict[str, Any], augment: nn.Module, student: nn.Module, teacher: nn.Module
    ) -> None:
        """``student`` / ``teacher``: two timm backbones of the same architecture; the teacher is built
        without drop-path and starts as a copy of the student."""
        super().__init__(settings, augment)
        head = settings["head"]
        dim = int(student.num_features)

        def make_head() -> DINOProjectionHead:
            return DINOProjectionHead(
                dim,
                int(head["hidden_dim"]),
                int(head["bottleneck_dim"]),
                int(head["out_dim"]),
                batch_norm=bool(head.get("batch_norm", False)),
                norm_last_layer=bool(head.get("norm_last_layer", True)),
            )

        self.student_backbone = student
        self.student_head = make_head()
        self.teacher_backbone = teacher
        self.teacher_head = make_head()
        self.teacher_backbone.load_state_dict(self.student_backbone.state_dict())
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self.criterion = DINOLoss(
            output_dim=int(head["out_dim"]),
            warmup_teacher_temp=float(settings["teacher"]["warmup_temp"]),
            teacher_temp=float(settings["teacher"]["temp"]),
            student_temp=float(settings["student_temp"]),
            center_momentum=float(settings["center_momentum"]),
        )

    def teacher_temp_at(self, step: int) -> float:
        teacher = self.settings["teacher"]
        warmup = self.epochs_to_steps(teacher.get("temp_warmup_epochs", 0))
        return linear_warmup(step, warmup, float(teacher["warmup_temp"]), float(teacher["temp"]))

    def momentum_at(self, step: int) -> float:
        teacher = self.settings["teacher"]
        return cosine(step, self.total_steps, float(teacher["momentum"]), float(teacher["momentum_end"]))

    def warmups(self) -> dict[str, float]:
        teacher = float(self.settings["teacher"].get("temp_warmup_epochs", 0))
        return {**super().warmups(), "teacher.temp_warmup_epochs": teacher}

    def step_values(self, step: int) -> dict[str, float]:
        """Schedules, and the loss when teacher and student are uniform (ln K): DINO's plateau."""
        return {
            **super().step_values(step),
            "train/teacher_temp": self.teacher_temp_at(step),
            "train/teacher_momentum": self.momentum_at(step),
            "health/chance_loss": math.log(int(self.settings["head"]["out_dim"])),
        }

    def compute_loss(self, views: list[Tensor], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        n_global = int(self.settings["views"]["n_global"])
        with torch.no_grad():
            teacher_features = [self.teacher_backbone(v) for v in views[:n_global]]
            teacher_out = [self.teacher_head(f) for f in teacher_features]
        student_out = [self.student_head(self.student_backbone(v)) for v in views]
        temp = self.teacher_temp_at(self.global_step)
        if not self.monitor_step:
            return self.criterion(teacher_out, student_out, teacher_temp=temp), {}
        center = self.criterion.center.detach().clone()
        loss = self.criterion(teacher_out, student_out, teacher_temp=temp)
        with torch.no_grad():
            probs = torch.softmax((torch.stack(teacher_out).float() - center) / temp, dim=-1)
            entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
        extra = {
            "collapse/embedding_std": embedding_spread(teacher_features[0]),
            "collapse/teacher_entropy": entropy / math.log(probs.shape[-1]),
        }
        return loss, extra

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Keep the last head layer fixed for the first epoch(s): DINO's recipe against early collapse."""
        if self.global_step < self.epochs_to_steps(self.settings.get("freeze_last_layer_epochs", 0)):
            for param in self.student_head.last_layer.parameters():
                param.grad = None

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        step = self.global_step
        super().optimizer_step(*args, **kwargs)
        momentum = self.momentum_at(step)
        update_momentum(self.student_backbone, self.teacher_backbone, m=momentum)
        update_momentum(self.student_head, self.teacher_head, m=momentum)
