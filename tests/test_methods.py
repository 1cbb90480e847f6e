"""Method building blocks without a Trainer: registry, typed settings, MAE masking, weight-decay groups,
DINO teacher, SimCLR's single backbone pass, device-side scalars, health verdicts."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from omegaconf import OmegaConf

from ssl_radiology.config import load_group
from ssl_radiology.errors import UserError
from ssl_radiology.methods import available_methods, create_method, method_class, register_method, validate
from ssl_radiology.methods.base import DeviceScalars, SSLMethod, param_groups, step_seed
from ssl_radiology.methods.mae import random_patch_mask
from ssl_radiology.training.health import assess


def settings(method: str, **changes) -> dict:
    cfg = OmegaConf.merge(load_group("method", method), {"image_size": 32, "seed": 0}, changes)
    return OmegaConf.to_container(cfg, resolve=True)


def test_mae_mask_keeps_prefix_tokens_and_splits_patches_disjointly():
    torch.manual_seed(0)
    keep, mask = random_patch_mask(batch=3, patches=16, prefix=1, ratio=0.75, device=torch.device("cpu"))
    assert keep.shape == (3, 5) and mask.shape == (3, 12)
    assert (keep[:, 0] == 0).all()
    for k, m in zip(keep, mask, strict=True):
        assert sorted([*k[1:].tolist(), *m.tolist()]) == list(range(1, 17))


def test_norm_and_bias_parameters_get_no_weight_decay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = param_groups(model)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_dino_teacher_starts_as_the_student_without_drop_path_or_gradients():
    s = settings(
        "dino", backbone="vit_tiny_patch16_224", head={"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8}
    )
    module = create_method("dino", s)
    student, teacher = module.student_backbone.state_dict(), module.teacher_backbone.state_dict()
    assert all(torch.equal(student[k], teacher[k]) for k in student)
    assert not any(p.requires_grad for p in module.teacher_backbone.parameters())
    assert module.student_backbone.blocks[-1].drop_path1.drop_prob > 0
    assert module.export_module() is module.teacher_backbone


def test_step_seeds_differ_across_ranks_and_steps_but_repeat_exactly():
    seeds = {step_seed(0, rank, step, 0) for rank in range(2) for step in range(50)}
    assert len(seeds) == 100 and step_seed(0, 1, 7, 0) == step_seed(0, 1, 7, 0)


@pytest.mark.parametrize(
    ("method", "changes", "message"),
    [
        ("simclr", {"views": {"n_local": 2}}, "method.views.n_local must be 0 for simclr, got 2"),
        ("mae", {"mask_ratio": 1.0}, "method.mask_ratio must be a finite number > 0 and < 1, got 1.0"),
        ("dino", {"optimizer": {"name": "sgd"}}, "method.optimizer.name must be one of 'adamw', 'lars', got 'sgd'"),
        ("dino", {"head": {"out_dim": -5}}, "method.head.out_dim must be a positive integer, got -5"),
        ("dino", {"head": {"out_dim": 64.5}}, "method.head.out_dim must be a positive integer, got 64.5"),
        ("dino", {"batch_size": "abc"}, "method.batch_size must be a positive integer, got 'abc'"),
        ("dino", {"optimizer": {"base_lr": float("nan")}}, "method.optimizer.base_lr must be a finite number > 0, got nan"),
        ("simclr", {"optimizer": {"base_lr": -1}}, "method.optimizer.base_lr must be a finite number > 0, got -1"),
        ("dino", {"views": {"global_scale": [0.9, 0.4]}}, "method.views.global_scale must be a pair"),
        ("dino", {"head": {"outdim": 8}}, "method.head.outdim: unknown setting for method 'dino'; did you mean method.head.out_dim?"),
        ("mae", {"decoder": {"dim": 30, "num_heads": 4}}, "method.decoder.dim 30 must be divisible by"),
        ("dino", {"views": {"n_global": 1, "n_local": 0}}, "DINO needs at least 2 crops"),
    ],
)  # fmt: skip
def test_invalid_method_settings_are_one_line_naming_the_key(method, changes, message):
    with pytest.raises(UserError) as info:
        validate(settings(method, **changes) | {"name": method})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_whole_number_floats_pass_and_reference_configs_are_valid():
    for method in ("dino", "simclr", "mae"):
        validate(settings(method) | {"name": method})
    validate(settings("dino", head={"out_dim": 64.0}) | {"name": "dino"})


def test_registry_finds_every_method_file_and_refuses_unknown_names_and_duplicates():
    assert {"dino", "mae", "simclr"} <= set(available_methods())
    with pytest.raises(UserError, match=r"unknown method 'byol'; available: .*dino"):
        method_class("byol")
    with pytest.raises(ValueError, match="registered twice"):

        @register_method("dino")
        class Other(SSLMethod):
            pass

    with pytest.raises(TypeError, match="SSLMethod subclass"):
        register_method("plain")(object)


def test_a_new_method_is_one_registered_class_with_its_own_schema():
    from ssl_radiology.methods.settings import Float

    @register_method("test-ridge")
    class Ridge(SSLMethod):
        schema: ClassVar = {**SSLMethod.schema, "l2": Float(low=0.0)}

        def __init__(self, settings, augment, backbone):
            super().__init__(settings, augment)
            self.backbone = backbone

        def compute_loss(self, views, batch):
            return self.backbone(views[0]).pow(2).mean() * self.settings["l2"], {}

    try:
        base = settings("simclr")
        base.pop("projection"), base.pop("temperature")
        with pytest.raises(UserError, match=r"method\.l2 must be a finite number ≥ 0, got -1"):
            validate(base | {"name": "test-ridge", "l2": -1})
        module = create_method("test-ridge", base | {"backbone": "resnet18", "l2": 0.5})
        assert isinstance(module, Ridge) and module.export_module() is module.backbone
    finally:
        from ssl_radiology import methods

        methods._REGISTRY.pop("test-ridge")


def test_mae_refuses_attention_pooled_vits():
    s = settings("mae", backbone="vit_base_patch16_siglip_224", image_size=32)
    s["decoder"] = {"dim": 32, "depth": 1, "num_heads": 2}
    with pytest.raises(UserError, match="global_pool='map'"):
        create_method("mae", s)


def test_simclr_passes_both_views_through_the_backbone_in_one_batch():
    s = settings("simclr", backbone="resnet18", projection={"hidden_dim": 16, "out_dim": 8})
    module = create_method("simclr", s)
    calls = []
    module.backbone.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    module.monitor_step = True
    views = [torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32)]
    loss, extra = module.compute_loss(views, {})
    assert calls == [6] and torch.isfinite(loss) and "collapse/embedding_std" in extra


def test_device_scalars_average_per_key_and_read_once():
    acc = DeviceScalars()
    acc.add({"loss": torch.tensor(1.0), "std": torch.tensor(0.5)})
    acc.add({"loss": torch.tensor(3.0)})
    assert acc.pop_means() == {"loss": 2.0, "std": 0.5}
    assert acc.pop_means() == {}


@pytest.mark.parametrize(
    ("rows", "status"),
    [
        ([{"step": 0, "train/loss": 11.0, "health/chance_loss": 11.09}, {"step": 9, "train/loss": 5.0, "health/chance_loss": 11.09, "collapse/embedding_std": 0.8, "collapse/teacher_entropy": 0.5}], "ok"),
        ([{"step": 0, "train/loss": 11.09, "health/chance_loss": 11.09}, {"step": 9, "train/loss": 11.08, "health/chance_loss": 11.09, "collapse/teacher_entropy": 0.999}], "collapsed"),
        ([{"step": 0, "train/loss": 4.8, "health/chance_loss": 4.84}, {"step": 9, "train/loss": 4.7, "health/chance_loss": 4.84, "collapse/embedding_std": 0.9}], "plateau"),
        ([{"step": 0, "train/loss": 1.0}, {"step": 9, "train/loss": 0.2, "collapse/embedding_std": 0.01}], "collapsed"),
        ([], "unknown"),
    ],
)  # fmt: skip
def test_health_verdicts_on_constructed_histories(rows, status):
    health = assess("dino", rows)
    assert health["status"] == status and set(health) >= {"loss_start", "loss_end", "chance_loss", "checks"}
