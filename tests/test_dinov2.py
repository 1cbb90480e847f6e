"""DINOv2: block masks, Sinkhorn-Knopp targets, layer-wise lr decay, and a CLI run that resumes bit for bit."""

from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf

from ssl_radiology.cli import main
from ssl_radiology.config import load_group
from ssl_radiology.errors import UserError
from ssl_radiology.methods import create_method, validate
from ssl_radiology.methods.dinov2 import layer_decay_groups

TINY = ["method.head.out_dim=64", "method.head.hidden_dim=32", "method.head.bottleneck_dim=16"]


def settings(**changes) -> dict:
    tiny = {"backbone": "vit_tiny_patch16_224", "image_size": 64, "seed": 0, "views": {"n_local": 2}}
    tiny["head"] = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}
    cfg = OmegaConf.merge(load_group("method", "dinov2"), tiny, changes)
    return OmegaConf.to_container(cfg, resolve=True)


def views(batch: int = 4) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 1, 64, 64, generator=gen) for _ in range(2)] + [
        torch.randn(batch, 1, 32, 32, generator=gen) for _ in range(2)
    ]


def test_block_masks_repeat_under_the_step_seed_and_leave_python_random_alone():
    module = create_method("dinov2", settings())
    random.seed(123)
    before = random.random()
    random.seed(123)
    torch.manual_seed(7)
    first = module.block_masks(16, 8)
    torch.manual_seed(7)
    second = module.block_masks(16, 8)
    assert random.random() == before  # the caller's Python RNG stream is untouched
    assert torch.equal(first, second) and first.shape == (16, 8, 8)
    per_image = first.flatten(1).float().mean(1)
    assert int((per_image > 0).sum()) == 8  # mask.probability 0.5: half of the crops are masked
    assert per_image.max() <= 0.5 + 1e-6


def test_loss_combines_dino_ibot_and_koleo_and_trains_the_mask_token():
    module = create_method("dinov2", settings())
    torch.manual_seed(0)
    loss, extra = module.compute_loss(views(), {})
    assert torch.isfinite(loss) and extra["train/ibot_loss"] > 0 and extra["train/masked_fraction"] > 0
    expected = extra["train/dino_loss"] + extra["train/ibot_loss"] + 0.1 * extra["train/koleo_loss"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert module.mask_token.grad is not None and module.mask_token.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.teacher_backbone.parameters())


def test_sinkhorn_targets_are_distributions_and_leave_the_centres_at_zero():
    module = create_method("dinov2", settings(centering="sinkhorn"))
    logits = torch.randn(12, 64)
    target, temp, probs = module.teacher_targets(logits, 0.07)
    assert temp == 1.0 and torch.allclose(probs.sum(-1), torch.ones(12), atol=1e-5)
    assert torch.allclose(torch.softmax(target, -1), probs, atol=1e-6)  # softmax(log Q) = Q
    torch.manual_seed(0)
    module.compute_loss(views(), {})
    assert module.criterion.center.abs().sum() == 0 and module.patch_criterion.center.center.abs().sum() == 0


def test_layer_decay_scales_blocks_geometrically_and_slows_the_patch_embedding():
    module = create_method("dinov2", settings())
    vit = module.student_backbone
    depth = len(vit.blocks)
    groups = layer_decay_groups(module, depth, layer_decay=0.9, patch_embed_lr=0.2)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale[id(vit.blocks[depth - 1].mlp.fc1.weight)] == pytest.approx(0.9)
    assert scale[id(vit.blocks[0].mlp.fc1.weight)] == pytest.approx(0.9**depth)
    assert scale[id(vit.patch_embed.proj.weight)] == pytest.approx(0.9 ** (depth + 1) * 0.2)
    assert scale[id(module.student_head.layers[0].weight)] == 1.0
    assert not any(id(p) in scale for p in module.teacher_backbone.parameters())
    assert all(g["weight_decay"] == 0.0 for g in groups if not g["decay"])
    assert scale[id(module.mask_token)] == pytest.approx(0.9 ** (depth + 1))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"centering": "median"}, "method.centering"),
        ({"mask": {"ratio": [0.5, 0.1]}}, "method.mask.ratio"),
        ({"koleo_weight": -1}, "method.koleo_weight"),
        ({"views": {"n_global": 0, "n_local": 1}}, "method.views"),
        ({"batch_size": 1}, "KoLeo needs a nearest neighbour"),
    ],
)
def test_invalid_dinov2_settings_name_the_setting(changes, message):
    with pytest.raises(UserError, match=message):
        validate(settings(**changes) | {"name": "dinov2"})


def test_dinov2_refuses_a_cnn_backbone():
    with pytest.raises(UserError, match="needs a Vision Transformer"):
        create_method("dinov2", settings(backbone="resnet18"))


def argv(out, *extra: str) -> list[str]:
    flags = "--data phantom --image-size 64 --batch-size 4 --accelerator cpu --workers 0 --max-steps 4"
    return ["pretrain", "--method", "dinov2", *flags.split(), "--backbone", "vit_tiny_patch16_224",
            "--checkpoint-every", "100", "--out", str(out), *TINY, "method.views.n_local=2",
            "train.epoch_length=12", *extra]  # fmt: skip


def test_cli_run_exports_the_teacher_and_resumes_to_the_uninterrupted_weights(phantom_env, tmp_path):
    import timm
    from safetensors.torch import load_file

    assert main(argv(tmp_path / "full", "method.centering=sinkhorn")) == 0
    split = tmp_path / "split"
    assert main(argv(split, "method.centering=sinkhorn", "train.stop_at_step=2")) == 0
    assert main([*argv(split, "method.centering=sinkhorn"), "--resume"]) == 0
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)
    assert full["global_step"] == resumed["global_step"] == 4
    assert full["state_dict"].keys() == resumed["state_dict"].keys()
    assert all(torch.equal(full["state_dict"][k], resumed["state_dict"][k]) for k in full["state_dict"])
    model = timm.create_model("vit_tiny_patch16_224", in_chans=1, num_classes=0, img_size=64)
    exported = load_file(tmp_path / "full" / "backbone.safetensors")
    model.load_state_dict(exported, strict=True)
    assert torch.equal(exported["cls_token"], full["state_dict"]["teacher_backbone.cls_token"])
    header = (tmp_path / "full" / "metrics.csv").read_text().splitlines()[0]
    assert "train/ibot_loss" in header and "collapse/teacher_entropy" in header


@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "vit_small_patch14_reg4_dinov2"])
def test_masked_forward_is_timms_forward_and_masks_only_the_masked_patches(arch):
    from ssl_radiology.methods.dinov2 import vit_tokens
    from ssl_radiology.models import create_backbone

    size = 64 if "patch16" in arch else 56
    vit = create_backbone(arch, img_size=size).eval()
    images = torch.randn(2, 1, size, size)
    tokens = vit_tokens(vit, images)
    assert torch.allclose(tokens, vit.forward_features(images), atol=1e-6)
    grid = size // vit.patch_embed.patch_size[0]
    mask = torch.zeros(2, grid, grid, dtype=torch.bool)
    mask[1, 0, 0] = True
    masked = vit_tokens(vit, images, mask, torch.zeros(1, vit.embed_dim))
    assert torch.equal(masked[0], tokens[0]) and not torch.allclose(masked[1], tokens[1])
