"""DINOv2 (Oquab et al. 2023): DINO's CLS self-distillation + iBOT masked-patch distillation + KoLeo.

What DINOv2 adds to DINO (``methods.dino``), and where each piece comes from:

* **iBOT patch loss** (lightly ``IBOTPatchLoss``): the student sees its global crops with DINOv2 *block
  masks* (lightly ``random_block_mask``, the port of DINOv2's ``MaskingGenerator`` + collate: half of the
  images masked, each with a ratio drawn from 0.1–0.5 spread over the batch); masked patch embeddings are
  replaced by a learned mask token, and the student's patch tokens at masked positions are trained to
  match the teacher's (unmasked) patch tokens through the shared DINO head.
* **KoLeo** (lightly ``KoLeoLoss``) on the student's CLS tokens of each global crop: spreads the batch
  over the sphere (nearest-neighbour entropy estimator).
* **Sinkhorn-Knopp centring** (``centering: sinkhorn``, lightly's distributed ``sinkhorn``) as an
  alternative to DINO's moving-average centre. The teacher targets ``Q`` then reach lightly's losses as
  ``log Q`` with temperature 1 and a centre frozen at zero (momentum 1), so ``softmax(log Q) = Q`` exactly
  and the same loss code serves both modes. For masked patches, lightly's distributed Sinkhorn assumes the
  same token count on every rank (DINOv2 all-reduces the true count): under DDP the per-rank mask counts
  differ a little, so the patch targets' normalisation is approximate there.
* **Layer-wise learning-rate decay** and a smaller learning rate for the patch embedding, and the square-root
  batch scaling ``base_lr × sqrt(global_batch / 1024)`` of the DINOv2 recipe.

The masked forward pass is :func:`vit_tokens`: timm's ``forward_features`` with the mask token swapped in
after the patch embedding — exactly where DINOv2's ``prepare_tokens_with_masks`` puts it — so the student
and teacher stay plain timm ViTs and the exported teacher backbone loads into timm unchanged.
Block masks are drawn with Python's ``random`` (lightly's implementation); :meth:`DINOv2.block_masks`
seeds it from the step's private torch RNG, so masks are part of the bit-exact resume guarantee.
"""

from __future__ import annotations

import math
import random
from typing import Any, ClassVar

import torch
from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss
from lightly.loss.swav_loss import sinkhorn
from lightly.models.utils import random_block_mask
from torch import Tensor, nn

from ssl_radiology.errors import UserError
from ssl_radiology.methods import register_method
from ssl_radiology.methods.base import embedding_spread
from ssl_radiology.methods.dino import DINO
from ssl_radiology.methods.schedules import warmup_cosine
from ssl_radiology.methods.settings import Float, Int, OneOf, Pair, Rule

_PROBABILITY = Float(low=0.0, high=1.0)


def vit_tokens(
    vit: nn.Module, images: Tensor, mask: Tensor | None = None, mask_token: Tensor | None = None
) -> Tensor:
    """All output tokens ``(B, prefix + patches, D)`` of a timm ViT, patches where ``mask`` is True replaced
    by ``mask_token`` before position embedding (``mask``: ``(B, h, w)`` bool over the patch grid)."""
    x = vit.patch_embed(images)  # (B, h, w, D) for dynamic_img_size ViTs, else (B, h*w, D)
    if mask is not None and mask_token is not None:
        x = torch.where(mask.reshape(x.shape[:-1]).unsqueeze(-1), mask_token.to(x.dtype), x)
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
    return vit.norm(vit.blocks(x))


def layer_decay_groups(
    module: nn.Module, depth: int, layer_decay: float, patch_embed_lr: float
) -> list[dict]:
    """Parameter groups with DINOv2's ``lr_scale`` and weight-decay rules.

    Student backbone parameters get ``layer_decay ** (depth + 1 - layer)`` (layer 0: embeddings, mask and
    prefix tokens; block *i*: *i* + 1; final norm: depth + 1); the patch embedding another × ``patch_embed_lr``.
    Heads keep scale 1. Biases and 1-D parameters (norms, layer scales) are not decayed.
    """
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        scale = 1.0
        if name.startswith("student_backbone.") or name == "mask_token":
            sub = name.removeprefix("student_backbone.")
            if sub.startswith("blocks."):
                layer = int(sub.split(".")[1]) + 1
            elif sub.startswith(("patch_embed", "cls_token", "reg_token", "pos_embed", "mask_token")):
                layer = 0
            else:
                layer = depth + 1
            scale = layer_decay ** (depth + 1 - layer) * (
                patch_embed_lr if sub.startswith("patch_embed") else 1.0
            )
        decay = param.ndim > 1 and not name.endswith(".bias")
        groups.setdefault((scale, decay), []).append(param)
    return [
        {"params": params, "lr_scale": scale, "decay": decay, **({} if decay else {"weight_decay": 0.0})}
        for (scale, decay), params in sorted(groups.items(), key=lambda item: item[0])
    ]


@register_method("dinov2")
class DINOv2(DINO):
    """DINO's student/teacher, heads, schedules and EMA (``methods.dino``) plus the DINOv2 losses above.

    The student and teacher backbones must be timm ViTs (patch tokens); the teacher is exported.
    """

    needs_patches = True
    schema: ClassVar[dict[str, Rule]] = {
        **DINO.schema,
        "centering": OneOf("centering", "sinkhorn"),
        "ibot_weight": Float(low=0.0),
        "koleo_weight": Float(low=0.0),
        "mask.probability": _PROBABILITY,
        "mask.ratio": Pair(item=Float(low=0.0, high=1.0, high_open=True)),
        "mask.min_block": Int(low=1),
        "optimizer.layer_decay": Float(low=0.0, high=1.0, low_open=True),
        "optimizer.patch_embed_lr_mult": Float(low=0.0),
    }

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        super().check_settings(settings)
        if str(settings["optimizer"]["name"]) != "adamw":
            raise UserError(
                "method.optimizer.name: DINOv2 uses adamw (its layer-wise lr decay is built on it)"
            )
        if float(settings["koleo_weight"]) > 0 and int(settings["batch_size"]) < 2:
            raise UserError(
                "--batch-size must be ≥ 2 for dinov2: KoLeo needs a nearest neighbour in the batch"
            )

    def __init__(
        self, settings: dict[str, Any], augment: nn.Module, student: nn.Module, teacher: nn.Module
    ) -> None:
        super().__init__(settings, augment, student, teacher)
        out_dim = int(settings["head"]["out_dim"])
        teacher_cfg = settings["teacher"]
        self.sinkhorn = settings["centering"] == "sinkhorn"
        # sinkhorn: the centre is never used, momentum 1 keeps it at zero (see module docstring)
        momentum = 1.0 if self.sinkhorn else float(settings["center_momentum"])
        self.criterion = DINOLoss(
            output_dim=out_dim,
            warmup_teacher_temp=float(teacher_cfg["warmup_temp"]),
            teacher_temp=float(teacher_cfg["temp"]),
            student_temp=float(settings["student_temp"]),
            center_momentum=momentum,
        )
        self.patch_criterion = IBOTPatchLoss(
            output_dim=out_dim,
            teacher_temp=float(teacher_cfg["temp"]),
            student_temp=float(settings["student_temp"]),
            center_momentum=momentum,
        )
        self.koleo = KoLeoLoss()
        self.mask_token = nn.Parameter(torch.zeros(1, int(student.embed_dim)))
        nn.init.normal_(self.mask_token, std=0.02)  # as timm / DINOv2 initialise prefix tokens
        self.prefix = int(student.num_prefix_tokens)
        self.patch = int(student.patch_embed.patch_size[0])

    # ------------------------------------------------------------------ optimiser (DINOv2 recipe)
    def lr_at(self, step: int) -> float:
        """DINOv2 scales the base learning rate by ``sqrt(global_batch / 1024)``, not linearly."""
        opt = self.settings["optimizer"]
        peak = float(opt["base_lr"]) * math.sqrt(self.global_batch / 1024.0)
        warmup = self.epochs_to_steps(opt.get("warmup_epochs", 0))
        return warmup_cosine(step, self.total_steps, peak, float(opt.get("min_lr", 0.0)), warmup)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = self.settings["optimizer"]
        groups = layer_decay_groups(
            self,
            depth=len(self.student_backbone.blocks),
            layer_decay=float(opt.get("layer_decay", 1.0)),
            patch_embed_lr=float(opt.get("patch_embed_lr_mult", 1.0)),
        )
        betas = tuple(float(b) for b in opt.get("betas", (0.9, 0.999)))
        return torch.optim.AdamW(groups, lr=self.lr_at(0), betas=betas)  # type: ignore[arg-type]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        for group in self.optimizers(use_pl_optimizer=False).param_groups:  # type: ignore[union-attr]
            group["lr"] *= group.get("lr_scale", 1.0)

    # ------------------------------------------------------------------ the loss
    def block_masks(self, batch: int, grid: int) -> Tensor:
        """DINOv2 block masks ``(batch, grid, grid)``, drawn reproducibly from the step's torch RNG.

        Drawn on the CPU: lightly's generator reads each block back, a device sync per block on a GPU."""
        mask = self.settings["mask"]
        state = random.getstate()
        random.seed(int(torch.randint(0, 2**62, (1,)).item()))
        try:
            return random_block_mask(
                (batch, grid, grid),
                batch_mask_ratio=float(mask["probability"]),
                min_image_mask_ratio=float(mask["ratio"][0]),
                max_image_mask_ratio=float(mask["ratio"][1]),
                min_num_masks_per_block=int(mask.get("min_block", 4)),
                max_num_masks_per_block=max(int(mask.get("min_block", 4)), grid * grid // 2),
            )
        finally:
            random.setstate(state)

    def teacher_targets(self, logits: Tensor, temp: float) -> tuple[Tensor, float, Tensor]:
        """(teacher input for lightly's loss, its temperature, teacher probabilities for monitoring)."""
        logits = logits.float()
        if self.sinkhorn:
            probs = sinkhorn(logits, iterations=3, epsilon=temp, gather_distributed=True)
            return torch.log(probs.clamp_min(1e-30)), 1.0, probs
        center = self.criterion.center.reshape(1, -1).detach()
        return logits, temp, torch.softmax((logits - center) / temp, dim=-1)

    def step_values(self, step: int) -> dict[str, float]:
        """A model that learnt nothing pays ln K in the CLS loss and ``ibot_weight`` × ln K in the patch loss
        (KoLeo is a regulariser near 0 and is left out)."""
        chance = (1.0 + float(self.settings["ibot_weight"])) * math.log(int(self.settings["head"]["out_dim"]))
        return {**super().step_values(step), "health/chance_loss": chance}

    def compute_loss(self, views: list[Tensor], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        n_global = int(self.settings["views"]["n_global"])
        globals_, locals_ = torch.cat(views[:n_global]), views[n_global:]
        grid = globals_.shape[-1] // self.patch
        cpu_masks = self.block_masks(globals_.shape[0], grid)
        any_masked = bool(cpu_masks.any())
        masks = cpu_masks.to(globals_.device, non_blocking=True)
        temp = self.teacher_temp_at(self.global_step)

        with torch.no_grad():
            teacher_tokens = vit_tokens(self.teacher_backbone, globals_)
            teacher_cls = self.teacher_head(teacher_tokens[:, 0])
            target, target_temp, probs = self.teacher_targets(teacher_cls, temp)
        student_tokens = vit_tokens(self.student_backbone, globals_, masks, self.mask_token)
        student_cls = [self.student_head(student_tokens[:, 0])]
        if locals_:
            local_tokens = vit_tokens(self.student_backbone, torch.cat(locals_))
            student_cls.append(self.student_head(local_tokens[:, 0]))
        student_out = torch.cat(student_cls).float().chunk(len(views))
        loss_dino = self.criterion(list(target.chunk(n_global)), list(student_out), teacher_temp=target_temp)

        flat_mask = masks.flatten(1)
        loss_ibot = loss_dino.new_zeros(())
        if any_masked and float(self.settings["ibot_weight"]) > 0:
            with torch.no_grad():
                teacher_patches = self.teacher_head(teacher_tokens[:, self.prefix :][flat_mask])
                patch_target, patch_temp, _ = self.teacher_targets(teacher_patches, temp)
            student_patches = self.student_head(student_tokens[:, self.prefix :][flat_mask]).float()
            loss_ibot = self.patch_criterion(patch_target, student_patches, masks, teacher_temp=patch_temp)
        loss_koleo = torch.stack([self.koleo(c.float()) for c in student_tokens[:, 0].chunk(n_global)]).sum()

        loss = (
            loss_dino
            + float(self.settings["ibot_weight"]) * loss_ibot
            + float(self.settings["koleo_weight"]) * loss_koleo
        )
        entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
        extra = {
            "collapse/embedding_std": embedding_spread(teacher_tokens[:, 0]),
            "collapse/teacher_entropy": entropy / math.log(probs.shape[-1]),
            "train/dino_loss": loss_dino.detach(),
            "train/ibot_loss": loss_ibot.detach(),
            "train/koleo_loss": loss_koleo.detach(),
            "train/masked_fraction": flat_mask.float().mean(),
        }
        return loss, extra
