"""SimCLR (Chen et al. 2020): contrast two augmented views against all others in the global batch.

Projection head and NT-Xent loss come from lightly; ``gather_distributed=True`` all-gathers the
embeddings so that every rank uses the negatives of the whole global batch, as in the paper.
"""

from __future__ import annotations

from typing import Any

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import Tensor, nn

from ssl_radiology.methods.base import SSLMethod, embedding_spread


class SimCLR(SSLMethod):
    backbone_prefix = "backbone."

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

    def compute_loss(self, views: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if len(views) != 2:
            raise ValueError(
                f"SimCLR needs exactly 2 views per image, got {len(views)} (method.views.n_global)"
            )
        features = [self.backbone(v) for v in views]
        z0, z1 = (self.projection_head(f) for f in features)
        loss = self.criterion(z0, z1)
        return loss, {"collapse/embedding_std": embedding_spread(features[0])}
