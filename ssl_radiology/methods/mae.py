"""MAE (He et al. 2022): mask 75 % of the patches, reconstruct their (per-patch normalised) pixels.

Encoder and decoder are lightly's timm-based ``MaskedVisionTransformerTIMM`` and
``MaskedVisionTransformerDecoderTIMM``; the encoder wraps the timm ViT in place, so the exported backbone
(``encoder.vit``) is a plain timm model. The loss is mean squared error on masked patches only, with
``norm_pix_loss`` (targets normalised per patch) as in the paper's best setting.

Pooling: MAE trains the patch tokens (and the class token), never an attention-pooling head, so a timm
ViT whose features come from ``global_pool="map"`` (SigLIP-style) would be evaluated through a random
head. Such backbones are refused at the start with a message saying so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from torch import Tensor, nn

from ssl_radiology.errors import UserError
from ssl_radiology.methods import register_method
from ssl_radiology.methods.base import SSLMethod, embedding_spread
from ssl_radiology.methods.settings import Bool, Float, Int, Rule, check_views


def random_patch_mask(
    batch: int, patches: int, prefix: int, ratio: float, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Indices into the token sequence (prefix tokens first) of kept and masked tokens.

    Prefix tokens (class / register) are always kept; exactly ``round(patches × (1 - ratio))`` patches
    are kept per image so that batches stack.
    """
    keep = max(1, round(patches * (1.0 - ratio)))
    order = torch.argsort(torch.rand(batch, patches, device=device), dim=1) + prefix
    prefix_idx = torch.arange(prefix, device=device).expand(batch, prefix)
    return torch.cat([prefix_idx, order[:, :keep]], dim=1), order[:, keep:]


@register_method("mae")
class MAE(SSLMethod):
    backbone_prefix = "encoder.vit."
    needs_patches = True
    schema: ClassVar[dict[str, Rule]] = {
        **SSLMethod.schema,
        "mask_ratio": Float(low=0.0, high=1.0, low_open=True, high_open=True),
        "norm_pix_loss": Bool(),
        "decoder.dim": Int(low=1),
        "decoder.depth": Int(low=1),
        "decoder.num_heads": Int(low=1),
    }

    @classmethod
    def check_settings(cls, settings: dict[str, Any]) -> None:
        super().check_settings(settings)
        check_views(settings, n_global=(1, 1), n_local=(0, 0))
        decoder = settings["decoder"]
        if int(decoder["dim"]) % int(decoder["num_heads"]):
            raise UserError(
                f"method.decoder.dim {decoder['dim']} must be divisible by "
                f"method.decoder.num_heads {decoder['num_heads']}"
            )

    @classmethod
    def build(cls, settings: dict[str, Any], augment: nn.Module, backbone: Callable[..., nn.Module]) -> MAE:
        vit = backbone()
        if getattr(vit, "global_pool", None) == "map":
            raise UserError(
                f"method.backbone: {settings['backbone']} pools features with an attention head "
                "(timm global_pool='map') that MAE never trains; use a ViT with token or average pooling"
            )
        return cls(settings, augment, vit=vit)

    def __init__(self, settings: dict[str, Any], augment: nn.Module, vit: nn.Module) -> None:
        super().__init__(settings, augment)
        decoder = settings["decoder"]
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.prefix = int(vit.num_prefix_tokens)
        self.num_patches = int(vit.patch_embed.num_patches)
        self.encoder = MaskedVisionTransformerTIMM(vit=vit)
        dim = int(decoder["dim"])
        self.decoder_embed = nn.Linear(int(vit.embed_dim), dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=self.num_patches,
            embed_dim=dim,
            depth=int(decoder["depth"]),
            num_heads=int(decoder["num_heads"]),
            num_prefix_tokens=self.prefix,
        )
        self.decoder_pred = nn.Linear(dim, self.patch_size**2 * int(vit.patch_embed.proj.in_channels))

    def compute_loss(self, views: list[Tensor], batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        images = views[0]
        batch = images.shape[0]
        idx_keep, idx_mask = random_patch_mask(
            batch, self.num_patches, self.prefix, float(self.settings["mask_ratio"]), images.device
        )
        encoded = self.encoder.encode(images, idx_keep=idx_keep)
        tokens = utils.repeat_token(self.decoder.mask_token, (batch, self.num_patches + self.prefix))
        tokens = utils.set_at_index(tokens, idx_keep, self.decoder_embed(encoded).type_as(tokens))
        decoded = self.decoder(tokens)
        prediction = self.decoder_pred(utils.get_at_index(decoded, idx_mask))
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - self.prefix)
        if self.settings.get("norm_pix_loss", True):
            target = utils.normalize_mean_var(target, dim=-1)
        loss = nn.functional.mse_loss(prediction, target)
        # the plateau: predicting the mean target pixel of the batch for every masked pixel
        extra = {"health/chance_loss": target.detach().float().var(correction=0)}
        if self.monitor_step:
            cls = encoded[:, 0] if self.prefix else encoded.mean(dim=1)
            extra["collapse/embedding_std"] = embedding_spread(cls)
        return loss, extra
