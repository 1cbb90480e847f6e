"""Continued pre-training (``--init``): RGB→1-channel rule, student+teacher init, whole-method continuation,
head warm-up, provenance in checkpoint / backbone.json, method export. Offline: weights from local files."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from ssl_radiology.cli import main
from ssl_radiology.config import load_group
from ssl_radiology.errors import UserError
from ssl_radiology.methods import create_method
from ssl_radiology.models import checkpoint_hash
from ssl_radiology.models.provenance import row_fields
from ssl_radiology.training.init import apply_init, check_init

ARCH = "vit_tiny_patch16_224"
HEAD = {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}


@pytest.fixture(scope="module")
def rgb_file(tmp_path_factory):
    """timm-format RGB weights of a ViT-Tiny at 224 px, as a user would download them."""
    path = tmp_path_factory.mktemp("weights") / "vit_tiny_rgb.safetensors"
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def settings(method: str, size: int = 64) -> dict:
    extra = {"backbone": ARCH, "image_size": size, "seed": 0, "head": HEAD, "views": {"n_local": 2}}
    return OmegaConf.to_container(OmegaConf.merge(load_group("method", method), extra), resolve=True)


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("rule", "factor"), [("sum", 1.0), ("mean", 1.0 / 3.0)])
def test_imagenet_file_initialises_student_and_teacher_with_the_channel_rule(rgb_file, rule, factor):
    module = create_method("dino", settings("dino"))
    spec = f"imagenet:{rgb_file}"
    record = apply_init(module, spec, channels=rule)
    rgb = load_file(rgb_file)["patch_embed.proj.weight"]
    stem = module.student_backbone.patch_embed.proj.weight
    assert stem.shape[1] == 1 and torch.allclose(stem, rgb.sum(1, keepdim=True) * factor)
    assert same(module.student_backbone.state_dict(), module.teacher_backbone.state_dict())
    assert module.student_backbone.pos_embed.shape[1] == 1 + (64 // 16) ** 2  # resampled from 224 px
    assert record["hash"] == checkpoint_hash(spec, backbone=ARCH) and not record["full"]
    assert module.init_record == record and record["channels"] == rule


def test_init_settings_fail_early_with_one_line(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        check_init({"init": str(tmp_path / "missing.safetensors")})
    with pytest.raises(UserError, match="random initialisation is the default"):
        check_init({"init": "random"})
    with pytest.raises(UserError, match="init_channels"):
        check_init({"init": None, "init_channels": "repeat3"})
    with pytest.raises(UserError, match="head_warmup_steps"):
        check_init({"init": None, "head_warmup_steps": -1})


@pytest.fixture(scope="module")
def continued_run(phantom_env, rgb_file, tmp_path_factory):
    """A 3-step DINO run from the RGB file, backbone frozen throughout (warm-up ≥ steps), heads exported."""
    run = tmp_path_factory.mktemp("runs") / "dino-init"
    flags = "--data phantom --image-size 64 --batch-size 4 --accelerator cpu --workers 0 --max-steps 3"
    args = ["pretrain", "--method", "dino", *flags.split(), "--backbone", ARCH, "--out", str(run),
            "--init", f"imagenet:{rgb_file}", "--export-heads", "train.head_warmup_steps=3",
            *(f"method.head.{k}={v}" for k, v in HEAD.items()), "method.views.n_local=2"]  # fmt: skip
    assert main(args) == 0
    return run


def test_head_warmup_keeps_the_backbone_and_provenance_travels(continued_run, rgb_file):
    reference = create_method("dino", settings("dino"))
    apply_init(reference, f"imagenet:{rgb_file}")
    ckpt = torch.load(continued_run / "checkpoints" / "last.ckpt", weights_only=True)
    state = ckpt["state_dict"]
    student = {
        k.removeprefix("student_backbone."): v for k, v in state.items() if k.startswith("student_backbone.")
    }
    assert same(student, reference.student_backbone.state_dict())  # frozen for all 3 steps
    student_head = {
        k.removeprefix("student_head."): v for k, v in state.items() if k.startswith("student_head.")
    }
    teacher_head = {
        k.removeprefix("teacher_head."): v for k, v in state.items() if k.startswith("teacher_head.")
    }
    assert not same(student_head, teacher_head)  # both start equal: the student head trained, the EMA lags
    record = ckpt["ssl_radiology"]["init"]
    assert record["hash"] == checkpoint_hash(f"imagenet:{rgb_file}", backbone=ARCH)
    assert json.loads((continued_run / "backbone.json").read_text())["init"] == record
    for spec in (
        continued_run,
        continued_run / "checkpoints" / "last.ckpt",
        continued_run / "backbone.safetensors",
    ):
        assert row_fields(spec)["init_hash"] == record["hash"]  # what every evaluation result row carries
    assert row_fields("random")["init_hash"] is None


def test_a_run_continues_as_a_whole_method_or_as_a_backbone(continued_run):
    exported = load_file(continued_run / "method.safetensors")
    again = create_method("dino", settings("dino"))
    record = apply_init(again, str(continued_run))
    assert record["full"] and same(again.state_dict(), exported)  # student, teacher, heads, centre
    # another method (DINOv2 at another image size) takes the exported teacher backbone into both networks
    other = create_method("dinov2", settings("dinov2", size=32))
    record = apply_init(other, str(continued_run))
    teacher = load_file(continued_run / "backbone.safetensors")
    assert not record["full"]
    for net in (other.student_backbone, other.teacher_backbone):
        got = net.state_dict()
        assert torch.equal(got["blocks.0.attn.qkv.weight"], teacher["blocks.0.attn.qkv.weight"])
        assert got["pos_embed"].shape[1] == 1 + (32 // 16) ** 2


def test_a_changed_head_refuses_the_whole_method_and_names_the_backbone_route(continued_run):
    changed = settings("dino")
    changed["head"] = {**changed["head"], "out_dim": 32}
    with pytest.raises(UserError, match=r"backbone\.safetensors"):
        apply_init(create_method("dino", changed), str(continued_run))
    record = apply_init(create_method("dino", changed), str(continued_run / "backbone.safetensors"))
    assert not record["full"]
