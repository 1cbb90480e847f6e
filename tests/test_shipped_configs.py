"""Every shipped YAML loads, with and without the environment variables it names; a data source or task whose
root is missing fails with one line that names the variable and the phantom alternative."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationKeyError

from ssl_radiology.config import config_root, load_group
from ssl_radiology.data.sources import resolve_source
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.tasks import task_spec

SHIPPED = sorted(config_root().rglob("*.yaml"))
ROOT_ENVS = sorted(
    {str(OmegaConf.load(p).get("root_env")) for p in SHIPPED if "root_env" in OmegaConf.load(p)}
)


def _ids(paths):
    return [p.relative_to(config_root()).as_posix() for p in paths]


@pytest.mark.parametrize("with_env", [False, True], ids=["unset", "set"])
@pytest.mark.parametrize("path", SHIPPED, ids=_ids(SHIPPED))
def test_every_shipped_yaml_resolves(path, with_env, tmp_path, monkeypatch):
    for env in ROOT_ENVS:
        if with_env:
            monkeypatch.setenv(env, str(tmp_path))
        else:
            monkeypatch.delenv(env, raising=False)
    cfg = OmegaConf.load(path)  # a bad interpolation (``${oc.env:X,~/...}``) fails here already
    try:
        assert isinstance(OmegaConf.to_container(cfg, resolve=True), dict)
    except InterpolationKeyError as exc:  # a reference into the composed run config (method -> train.data)
        assert re.search(r"'(train|data|model|method|eval)\.", str(exc)), exc
    assert "${" not in path.read_text() or "oc.env" not in path.read_text(), (
        "name roots with root_env, not oc.env"
    )


DATA = sorted(p.stem for p in (config_root() / "data").glob("*.yaml") if "root_env" in OmegaConf.load(p))
TASKS = sorted(
    p.stem for p in (config_root() / "eval" / "tasks").glob("*.yaml") if "root_env" in OmegaConf.load(p)
)


@pytest.mark.parametrize("name", DATA)
def test_data_source_without_its_root_names_the_variable(name, monkeypatch, tmp_path):
    env = str(load_group("data", name).root_env)
    monkeypatch.setenv("SSL_RAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(UserError, match=rf"\${env} is not set\. Set {env} to .*'--data phantom'") as info:
        resolve_source(name)
    assert "\n" not in str(info.value)
    monkeypatch.setenv(env, str(tmp_path / "missing"))
    with pytest.raises(UserError, match=rf"\${env} points to .*missing, which is not a folder"):
        resolve_source(name)


@pytest.mark.parametrize("name", TASKS)
def test_task_without_its_root_names_the_variable(name, monkeypatch, tmp_path):
    cfg = OmegaConf.load(config_root() / "eval" / "tasks" / f"{name}.yaml")
    env = str(cfg.root_env)
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(
        UserError, match=rf"task '{re.escape(name)}' needs its files: \${env} is not set.*phantom"
    ):
        task_spec(name)
    monkeypatch.setenv(env, str(tmp_path))
    if "file" in cfg:
        with pytest.raises(UserError, match=rf"{cfg.file} not found \(\${env} is "):
            task_spec(name)
        (tmp_path / str(cfg.file)).touch()
    assert task_spec(name)["root"] == str(tmp_path / str(cfg.get("file", "")))


def test_task_root_accepts_a_home_relative_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data" / "CheXpert-v1.0-small").mkdir(parents=True)
    monkeypatch.setenv("CHEXPERT_ROOT", "~/data/CheXpert-v1.0-small")
    assert task_spec("chexpert")["root"] == str(tmp_path / "data" / "CheXpert-v1.0-small")
