"""Method building blocks without a Trainer: MAE masking, weight-decay groups, DINO teacher, config checks."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ssl_radiology.config import load_group
from ssl_radiology.errors import UserError
from ssl_radiology.methods import create_method, validate
from ssl_radiology.methods.base import param_groups, step_seed
from ssl_radiology.methods.mae import random_patch_mask


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
        ("simclr", {"views": {"n_local": 2}}, "SimCLR uses exactly 2 global views"),
        ("mae", {"mask_ratio": 1.0}, "method.mask_ratio must be in (0, 1)"),
        ("dino", {"optimizer": {"name": "sgd"}}, "method.optimizer.name: unknown optimizer 'sgd'"),
    ],
)
def test_invalid_method_settings_name_the_setting(method, changes, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(settings(method, **changes) | {"name": method})
