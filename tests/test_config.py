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
