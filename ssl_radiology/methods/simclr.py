"""SimCLR (Chen et al. 2020): contrast two augmented views against all others in the global batch.

Projection head and NT-Xent loss come from lightly; ``gather_distributed=True`` all-gathers the
embeddings so that every rank uses the negatives of the whole global batch, as in the paper. Both views go
through the backbone as **one** batch, so BatchNorm (synchronised across GPUs under DDP, see
``training.trainer``) normalises with the statistics of both views together, as the reference code does.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor, nn

from ssl_radiology.methods import register_method
from ssl_radiology.methods.base import SSLMethod, embedding_spread
from ssl_radiology.methods.settings import Float, Int, Rule, check_views


@register_method("simclr")
class SimCLR(SSLMethod):
    backbone_prefix = "backbone."
    schema: ClassVar[dict[str, Rule]] = {
        **SSLMethod.schema,
        "projection.hidden_dim": Int(low=1),
        "projection.out_dim": Int(low=1),
        "projection.num_layers": Int(low=1),
        "temperature": Float(low=0.0, low_open=True),
    }

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        super().check_settings(settings)
        check_views(settings, n_global=(2, 2), n_local=(0, 0))

    def __init__(self, settings: dict[str, Any], augment: nn.Module, backbone: nn.Module) -> None:
        super().__init__(settings, augment)
        proj = settings["projection"]
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(
            int(backbone.num_features),
            int(proj["hidden_dim"]),
            int(proj["out_dim"]),
            num_layers=int(proj.get("num_layers", 2)),
        )
        self.criterion = NTXentLoss(temperature=float(settings["temperature"]), gather_distributed=True)

    def step_values(self, step: int) -> dict[str, float]:
        """NT-Xent of a model that learnt nothing: uniform over the 2B − 1 candidates of a global batch."""
        global_batch = int(self.settings["batch_size"]) * self.trainer.world_size
        return {**super().step_values(step), "health/chance_loss": math.log(2 * global_batch - 1)}

    def compute_loss(self, views: list[Tensor], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        if len(views) != 2:
            raise ValueError(
                f"SimCLR needs exactly 2 views per image, got {len(views)} (method.views.n_global)"
            )
        features = self.backbone(torch.cat(views))
        z0, z1 = self.projection_head(features).chunk(2)
        loss = self.criterion(z0, z1)
        extra = (
            {"collapse/embedding_std": embedding_spread(features[: len(views[0])])}
            if self.monitor_step
            else {}
        )
        return loss, extra
