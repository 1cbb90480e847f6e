"""The Python API's request objects: cheap validation before any work, human-readable command lines, and
``prepare`` end to end on a one-patient phantom."""

from __future__ import annotations

import shlex

import pytest

from ssl_radiology.api import (
    AnalyzeRequest,
    BackboneRef,
    EvalRequest,
    PrepareRequest,
    PretrainRequest,
    prepare,
)
from ssl_radiology.cli import parse_command
from ssl_radiology.errors import UserError


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"protocol": "svm"}, "unknown evaluation protocol 'svm'"),
        ({"head": "sgd"}, "--head sgd: linear evaluation takes"),
        ({"seeds": ()}, "--seeds is empty"),
        ({"seeds": (0, -1)}, "seeds must be ≥ 0"),
        ({"image_size": 0}, "--image-size must be ≥ 1"),
        ({"shots": 0}, "--shots must be ≥ 1"),
        ({"fraction": 1.5}, "--fraction must be in (0, 1]"),
        ({"subgroups": ("height",)}, "--subgroups: unknown height"),
        ({"backbone": BackboneRef("random")}, "--checkpoint random needs --backbone NAME"),
        ({"out": __file__}, "is a file; give a folder"),
    ],
)
def test_eval_request_checks_name_the_setting(changes: dict, message: str) -> None:
    fields = {"protocol": "knn", "backbone": BackboneRef("runs/x"), "data": "phantom-ct", **changes}
    with pytest.raises(UserError) as info:
        EvalRequest(**fields).check()
    assert message in str(info.value)


def test_command_lines_parse_back_to_the_same_request() -> None:
    from ssl_radiology.commands.eval_options import eval_request
    from ssl_radiology.commands.pretrain import request_from_args

    evaluation = EvalRequest(
        "linear", BackboneRef("runs/dino", "vit_small_patch16_224", "dino"), "phantom-ct", out="res",
        fraction=0.25, seeds=(0, 1), pretrain_seed=2, head="logreg", subgroups=("sex", "age"),
        overrides=("sgd.epochs=5",),
    )  # fmt: skip
    _name, args, _module = parse_command(shlex.split(evaluation.command_line())[1:])
    assert eval_request(args, "linear", args.head) == evaluation
    run = PretrainRequest("dino", ("phantom:CT", "natural"), out="r", max_steps=5, fraction=0.1, resume=True,
                          weights=(0.5, 0.5), overrides=("method.head.out_dim=64",))  # fmt: skip
    _name, args, _module = parse_command(shlex.split(run.command_line())[1:])
    assert request_from_args(args) == run
    analysis = AnalyzeRequest("cka", (BackboneRef("runs/a", "vit_tiny_patch16_224", "a"), BackboneRef("random", "vit_tiny_patch16_224", "r")),
                              ("phantom",), out="figs", image_size=32, max_samples=64, overrides=("workers=0",))  # fmt: skip
    _name, args, _module = parse_command(shlex.split(analysis.command_line())[1:])
    assert (args.checkpoint, args.name, args.data, args.max_samples) == (
        ["runs/a", "random"],
        ["a", "r"],
        ["phantom"],
        64,
    )
    assert args.overrides == ["workers=0"] and args.image_size == 32
    assert BackboneRef("runs/dino-ct/checkpoints/last.ckpt").label == "dino-ct"
    assert BackboneRef("random", "resnet18").label == "random-resnet18"


def test_prepare_through_the_api(tmp_path) -> None:
    from ssl_radiology.data.phantom import generate_phantom

    raw = tmp_path / "raw"
    generate_phantom(raw, cases=1, ct_size=32, xray_size=32)
    summary = prepare(PrepareRequest((str(raw / "xray"),), str(tmp_path / "prepared"), image_size=32, workers=0,
                                     progress=False))  # fmt: skip
    assert summary.slices == 1
    with pytest.raises(UserError):
        prepare(PrepareRequest((str(raw),), str(tmp_path / "bad"), chunk_files=0, progress=False))


@pytest.mark.parametrize(
    ("protocol", "override", "message"),
    [
        ("knn", "ks=[-1]", "ks must be a non-empty list, each a positive integer, got [-1]"),
        ("knn", "batch_size=abc", "batch_size must be a positive integer, got 'abc'"),
        ("knn", "window=[40]", "window must be a window [centre, width]"),
        ("linear", "logreg.cs=[0]", "logreg.cs must be a non-empty list"),
        ("finetune", "val_fraction=1.5", "val_fraction must be a finite number"),
        ("finetune", "finetune.min_steps=0", "finetune.min_steps must be a positive integer, got 0"),
        ("finetune", "finetune.base_lrs=[]", "finetune.base_lrs must be a non-empty list"),
        ("linear", "sgd.epochs=-1", "sgd.epochs must be a positive integer, got -1"),
    ],
)
def test_bad_eval_settings_fail_before_any_work(protocol: str, override: str, message: str) -> None:
    from ssl_radiology.api import evaluate

    request = EvalRequest(protocol, BackboneRef("random", "resnet18"), "no-such-task", overrides=(override,))
    with pytest.raises(UserError) as info:  # the task does not exist: the settings fail first
        evaluate(request)
    assert message in str(info.value)


def test_shipped_eval_configs_pass_their_checks() -> None:
    from omegaconf import OmegaConf

    from ssl_radiology.config import load_group
    from ssl_radiology.evaluation.config_checks import RULES, check_eval_config

    for name in RULES:
        check_eval_config(name, OmegaConf.to_container(load_group("eval", name), resolve=True))
