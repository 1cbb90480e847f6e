"""Backbones and checkpoint I/O: 1-channel timm models, ImageNet weights from a local file, safe loading."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from ssl_radiology.errors import UserError
from ssl_radiology.models import (
    checkpoint_hash,
    create_backbone,
    export_backbone,
    load_backbone,
    patch_size_of,
    validate_image_size,
    weights_hash,
)

# timm's own test models (0.3 M parameters): same code paths as ViT-S / ResNet-50, a fraction of the time
VIT = "test_vit"
CNN = "test_resnet"
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "model"


def _lightning_ckpt(path: Path, backbone: torch.nn.Module, name: str, size: int) -> None:
    """A checkpoint shaped like the one ssl-rad pretrain writes (DINO: teacher backbone + a head)."""
    state = {f"teacher_backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["teacher_head.weight"] = torch.randn(4, backbone.num_features)
    torch.save(
        {
            "state_dict": state,
            "hyper_parameters": {"lr": 1e-3},
            "ssl_radiology": {"backbone": name, "image_size": size, "backbone_prefix": "teacher_backbone."},
        },
        path,
    )


def test_vit_is_one_channel_features_and_runs_at_other_sizes():
    torch.manual_seed(0)
    model = create_backbone(VIT, img_size=32)
    assert model.patch_embed.proj.in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, model.num_features)
    assert model(torch.randn(2, 1, 48, 64)).shape == (2, model.num_features)  # dynamic_img_size (DINO locals)


def test_cnn_ignores_img_size_and_has_one_channel_stem():
    model = create_backbone(CNN, img_size=32)
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, model.num_features)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UserError, match=r"close matches: .*vit_small_patch16_224"):
        create_backbone("vit_smal_patch16_224")
    with pytest.raises(UserError, match="no weights tagged 'nope'"):
        create_backbone(f"{VIT}.nope")


def test_patch_size_and_image_size_validation():
    assert patch_size_of("vit_small_patch16_224") == 16
    assert patch_size_of(CNN) is None
    with pytest.raises(UserError, match="image size 50 is not divisible by the patch size 16 of vit_small"):
        validate_image_size("vit_small_patch16_224", 50)
    validate_image_size(CNN, 50)


@pytest.mark.parametrize("name", ["vit_small", "vit_tiny", "resnet50", "resnet18"])
def test_model_configs_name_real_models_with_matching_patch_size(name):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    assert set(cfg) == {"name", "patch_size", "drop_path_rate"}
    assert patch_size_of(cfg.name) == cfg.patch_size


def _offline(monkeypatch) -> list:
    """Hub offline mode plus a DNS guard that records (and refuses) any attempt to reach the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    lookups: list = []

    def refuse(host, *args, **kwargs):
        lookups.append(host)
        raise OSError(f"network disabled in tests ({host})")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return lookups


def test_imagenet_from_local_file_sums_rgb_stem_and_stays_offline(tmp_path, monkeypatch):
    lookups = _offline(monkeypatch)
    torch.manual_seed(1)
    rgb = timm.create_model(VIT, pretrained=False)  # 3 channels, 1000-class head, 160 px: timm format
    path = tmp_path / "vit_tiny_in1k.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(path))
    model = load_backbone(f"imagenet:{path}", backbone=VIT, image_size=32)
    saved = load_file(str(path))
    torch.testing.assert_close(
        model.patch_embed.proj.weight, saved["patch_embed.proj.weight"].sum(1, keepdim=True)
    )
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, saved["blocks.0.attn.qkv.weight"])
    assert model.patch_embed.proj.in_channels == 1 and model.num_classes == 0
    assert (
        model.pos_embed.shape[1] == model.num_prefix_tokens + 4
    )  # resampled from 160 px to 32 px (2×2 patches)
    with pytest.raises(UserError, match=r"vit_tiny_in1k\.safetensors: not timm weights for test_resnet"):
        load_backbone(f"imagenet:{path}", backbone=CNN)
    assert checkpoint_hash(f"imagenet:{path}").startswith("imagenet-")
    assert lookups == []


def test_imagenet_hub_offline_is_a_clear_error(monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(UserError, match=r"could not download ImageNet weights .*imagenet:/path/to/model"):
        load_backbone("imagenet", backbone=CNN)
    assert (
        checkpoint_hash("imagenet:dino", backbone="vit_small_patch16_224")
        == "imagenet-vit_small_patch16_224.dino"
    )
    assert checkpoint_hash("imagenet", backbone="resnet18").startswith("imagenet-resnet18.")


def test_export_round_trip_through_ours_and_plain_timm(tmp_path):
    torch.manual_seed(2)
    model = create_backbone(VIT, img_size=32)
    weights = export_backbone(model, tmp_path / "run", backbone_name=VIT, image_size=32, method="dino")
    meta = json.loads((tmp_path / "run" / "backbone.json").read_text())
    assert meta == {
        "backbone": VIT,
        "image_size": 32,
        "in_chans": 1,
        "method": "dino",
        "num_features": model.num_features,
    }
    assert not list((tmp_path / "run").glob("*.tmp"))
    x = torch.randn(2, 1, 32, 32)
    model.eval()
    for loaded in (load_backbone(tmp_path / "run"), load_backbone(weights)):
        torch.testing.assert_close(loaded.eval()(x), model(x))
    plain = timm.create_model(
        VIT,
        pretrained=True,  # offline-ok: timm reads the local file given in pretrained_cfg_overlay
        in_chans=1,
        num_classes=0,
        img_size=32,
        pretrained_cfg_overlay=dict(file=str(weights), custom_load=False),
    )
    torch.testing.assert_close(plain.eval()(x), model(x))
    assert checkpoint_hash(tmp_path / "run") == weights_hash(model)


def test_safetensors_without_metadata_needs_backbone_name(tmp_path):
    model = create_backbone(CNN)
    weights = export_backbone(model, tmp_path / "cnn.safetensors", backbone_name=CNN, image_size=64)
    weights.with_suffix(".json").unlink()
    with pytest.raises(UserError, match="needs a backbone name"):
        load_backbone(weights)
    assert weights_hash(load_backbone(weights, backbone=CNN)) == weights_hash(model)


def test_lightning_ckpt_strips_prefix_and_hashes_like_its_export(tmp_path):
    torch.manual_seed(3)
    teacher = create_backbone(VIT, img_size=32)
    ckpt = tmp_path / "last.ckpt"
    _lightning_ckpt(ckpt, teacher, VIT, 32)
    loaded = load_backbone(ckpt, image_size=64)
    assert weights_hash(loaded) == weights_hash(teacher)
    exported = export_backbone(loaded, tmp_path / "export", backbone_name=VIT, image_size=32)
    assert checkpoint_hash(ckpt) == checkpoint_hash(exported) == weights_hash(teacher)
    with pytest.raises(UserError, match="not divisible by the patch size 16"):
        load_backbone(ckpt, image_size=40)


def test_run_dir_without_export_falls_back_to_last_ckpt(tmp_path):
    teacher = create_backbone(CNN)
    (tmp_path / "checkpoints").mkdir()
    _lightning_ckpt(tmp_path / "checkpoints" / "last.ckpt", teacher, CNN, 64)
    assert weights_hash(load_backbone(tmp_path)) == weights_hash(teacher)


def test_random_is_seeded_by_caller_and_hash_names_the_seed():
    torch.manual_seed(7)
    first = load_backbone("random", backbone=CNN)
    assert checkpoint_hash("random", backbone=CNN) == f"random-{CNN}-seed7"
    torch.manual_seed(7)
    assert weights_hash(load_backbone("random", backbone=CNN)) == weights_hash(first)
    with pytest.raises(UserError, match="needs a backbone name"):
        load_backbone("random")


class _Payload:
    """Unpickling this runs code that creates a file: the loader must never get that far."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("legacy", [False, True])
def test_checkpoint_carrying_code_is_refused(tmp_path, legacy):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save(
        {"state_dict": {}, "payload": _Payload(marker), "ssl_radiology": {"backbone": CNN}},
        ckpt,
        _use_new_zipfile_serialization=not legacy,
    )
    with pytest.raises(UserError, match=r"evil\.ckpt: refused to load"):
        load_backbone(ckpt)
    with pytest.raises(UserError, match="refused to load"):
        checkpoint_hash(ckpt)
    assert not marker.exists()


def test_wrong_or_missing_files_name_the_file(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        load_backbone(tmp_path / "missing.safetensors")
    weights = export_backbone(create_backbone(CNN), tmp_path / "x", backbone_name=CNN, image_size=32)
    state = load_file(str(weights))
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(weights))
    with pytest.raises(
        UserError, match=r"backbone\.safetensors: weights do not match test_resnet: missing keys " + dropped
    ):
        load_backbone(weights)
    with pytest.raises(UserError, match="holds a test_resnet backbone"):
        load_backbone(tmp_path / "x", backbone="resnet18")
    torch.save({"state_dict": {"a": torch.zeros(1)}}, tmp_path / "plain.ckpt")
    with pytest.raises(UserError, match="not an ssl-radiology pre-training checkpoint"):
        load_backbone(tmp_path / "plain.ckpt")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(UserError, match=r"junk\.safetensors: not a readable safetensors file"):
        load_backbone(tmp_path / "junk.safetensors", backbone=CNN)


def test_export_rejects_a_model_that_is_not_the_named_backbone(tmp_path):
    with pytest.raises(ValueError, match="model keys differ"):
        export_backbone(create_backbone(CNN), tmp_path, backbone_name="resnet18", image_size=32)
    assert not os.listdir(tmp_path)
