"""``@register_task``: one adapter file in this package + (optionally) one YAML in ``configs/eval/tasks``.

``load_task(name, image_size)`` accepts

* a task YAML name (``configs/eval/tasks/<name>.yaml``) or a path to one: ``adapter:`` picks the builder, the
  other keys are its arguments. ``root_env: VAR`` (+ ``file:``) names the data folder through an environment
  variable, ``~`` allowed; unset, the error names the variable and the phantom tasks that need no download;
* the short form ``adapter:PATH`` (``chexpert:/data/CheXpert-v1.0-small``, ``medmnist:organamnist.npz``) for
  adapters registered with ``short_form=True``; the task is named after the adapter (``chexpert``), or for
  MedMNIST the file (``organamnist``), or ``imagefolder-<folder>``.

Adapter modules in this package are imported on first use (``pkgutil``), so adding one is adding a file.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.tasks.base import Task, hold_out_site

Builder = Callable[..., Task]
_BUILDERS: dict[str, Builder] = {}
_SHORT_FORMS: dict[str, Callable[[str], str]] = {}
_INTERNAL = {"base", "images", "registry"}
PHANTOM_HINT = "--data phantom-xray"


def register_task(name: str, short_name: Callable[[str], str] | None = None) -> Callable[[Builder], Builder]:
    """Register ``builder(name=..., image_size=..., **yaml_keys) -> Task`` as adapter ``name``.

    ``short_name(path)`` enables the ``name:PATH`` form and says what the task is called there.
    """

    def decorate(builder: Builder) -> Builder:
        if name in _BUILDERS and _BUILDERS[name] is not builder:
            raise ValueError(f"task adapter '{name}' registered twice")
        _BUILDERS[name] = builder
        if short_name is not None:
            _SHORT_FORMS[name] = short_name
        return builder

    return decorate


def _discover() -> None:
    package = importlib.import_module("ssl_radiology.evaluation.tasks")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _INTERNAL:
            importlib.import_module(f"{package.__name__}.{module.name}")


def adapters() -> list[str]:
    _discover()
    return sorted(_BUILDERS)


def available_tasks() -> list[str]:
    """Names of the shipped task YAMLs."""
    from ssl_radiology.config import available

    return available("eval/tasks")


def load_task(name: str, image_size: int, ood_site: str | None = None, **options: Any) -> Task:
    """Resolve a task name / YAML / ``adapter:path`` into a :class:`Task` at ``image_size`` pixels."""
    _discover()
    spec = task_spec(name)
    spec.update({k: v for k, v in options.items() if v is not None})
    adapter = spec.pop("adapter")
    if adapter not in _BUILDERS:
        raise UserError(f"task {name}: unknown adapter '{adapter}' (known: {', '.join(sorted(_BUILDERS))})")
    task = _BUILDERS[adapter](name=spec.pop("name", name), image_size=image_size, **spec)
    return hold_out_site(task, ood_site) if ood_site is not None else task


def task_spec(name: str) -> dict[str, Any]:
    """Task settings from the ``adapter:path`` form, a YAML path, or ``configs/eval/tasks/<name>.yaml``."""
    from ssl_radiology.config import config_root

    _discover()
    adapter, sep, path = name.partition(":")
    if sep and adapter in _SHORT_FORMS:
        return {"adapter": adapter, "root": path, "name": _SHORT_FORMS[adapter](path)}
    candidate = Path(name).expanduser()
    if candidate.suffix not in {".yaml", ".yml"}:
        candidate = config_root() / "eval" / "tasks" / f"{name}.yaml"
    if not candidate.is_file():
        known = ", ".join(available_tasks()) or "none"
        forms = ", ".join(f"{a}:PATH" for a in sorted(_SHORT_FORMS))
        raise UserError(f"unknown task '{name}' (no {candidate}); known tasks: {known}; or use {forms}")
    try:
        cfg = OmegaConf.load(candidate)
        if not isinstance(cfg, DictConfig) or "adapter" not in cfg:
            raise UserError(f"{candidate}: a task YAML needs an 'adapter' key")
        spec = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise UserError(f"{candidate}: not a valid task YAML ({exc})") from exc
    assert isinstance(spec, dict)
    spec.setdefault("name", candidate.stem)
    if "root_env" in spec:
        spec["root"] = str(_env_root(spec))
    return spec


def _env_root(spec: dict[str, Any]) -> Path:
    """``$root_env`` (+ ``file``) of a task YAML; a clear error naming the variable when it is unset."""
    from ssl_radiology.data.sources import env_root

    env, file = spec.pop("root_env"), spec.pop("file", None)
    expects = spec.pop("expects", "the dataset folder")
    if spec.get("root"):  # given explicitly (option or YAML): the variable is not needed
        return Path(str(spec["root"])).expanduser()
    cfg = OmegaConf.create({"root_env": env, "expects": expects})
    root = env_root(f"task '{spec['name']}'", cfg, instead=PHANTOM_HINT)
    if file is None:
        return root
    path = root / str(file)
    if not path.exists():
        raise UserError(f"task '{spec['name']}': {path} not found (${env} is {root}); {expects}")
    return path
