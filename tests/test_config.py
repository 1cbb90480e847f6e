"""Config composition: groups, overrides, strictness, saving."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ssl_radiology.config import apply_overrides, available, compose, save
from ssl_radiology.errors import UserError


def test_compose_loads_groups_and_applies_overrides() -> None:
    cfg = compose({"method": "dino"}, ["method.head.out_dim=4096", "method.views.n_local=2"])
    assert cfg.method.head.out_dim == 4096 and cfg.method.views.n_local == 2
    assert "dino" in available("method")


def test_misspelt_override_fails_and_names_the_key() -> None:
    with pytest.raises(UserError, match=r"unknown setting 'method.out_dim'.*head"):
        compose({"method": "dino"}, ["method.out_dim=4096"])


def test_override_values_are_parsed_as_yaml() -> None:
    cfg = apply_overrides(OmegaConf.create({"a": {"b": 1, "c": [0]}}), ["a.b=2.5", "a.c=[1,2]"])
    assert cfg.a.b == 2.5 and list(cfg.a.c) == [1, 2]
    with pytest.raises(UserError, match="key=value"):
        apply_overrides(cfg, ["a.b"])


def test_unknown_group_lists_choices() -> None:
    with pytest.raises(UserError, match=r"unknown method 'byol'.*dino"):
        compose({"method": "byol"})


def test_save_writes_resolved_yaml(tmp_path: Path) -> None:
    path = save(OmegaConf.create({"x": 1, "y": "${x}"}), tmp_path / "run")
    assert OmegaConf.load(path) == {"x": 1, "y": 1}


def test_config_root_env_checkout_and_errors(tmp_path: Path, monkeypatch) -> None:
    from ssl_radiology.config import config_root

    monkeypatch.delenv("SSL_RAD_CONFIGS", raising=False)
    assert (config_root() / "method" / "dino.yaml").is_file()
    monkeypatch.setenv("SSL_RAD_CONFIGS", str(tmp_path))
    assert config_root() == tmp_path
    monkeypatch.setenv("SSL_RAD_CONFIGS", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="SSL_RAD_CONFIGS"):
        config_root()


def test_train_defaults_live_in_yaml_and_compose_with_the_method() -> None:
    cfg = compose({"method": "dino", "train": "default"}, ["train.workers=0", "method.batch_size=8"])
    assert cfg.train.workers == 0 and cfg.method.batch_size == 8 and cfg.train.fraction == 1.0
    with pytest.raises(UserError, match=r"unknown setting 'train\.worker'"):
        compose({"method": "dino", "train": "default"}, ["train.worker=0"])


def test_a_model_config_sets_the_method_backbone() -> None:
    from ssl_radiology.api.pretraining import compose_settings
    from ssl_radiology.api.types import PretrainRequest

    request = PretrainRequest("dino", ("phantom",), backbone="vit_tiny", max_steps=1)
    cfg = compose_settings(request)
    assert cfg.method.backbone == "vit_tiny_patch16_224" and cfg.method.drop_path == cfg.model.drop_path_rate
    cfg = compose_settings(PretrainRequest("dino", ("phantom",), backbone="vit_tiny", max_steps=1,
                                           overrides=("model.drop_path_rate=0.3",)))  # fmt: skip
    assert cfg.method.drop_path == 0.3
    assert "model" not in compose_settings(PretrainRequest("dino", ("phantom",), max_steps=1))
