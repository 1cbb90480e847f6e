"""Strict, torch-free checks of user settings: unknown keys and wrong types fail, naming the key.

A typo in a study file (``analyse:``, ``baselin:``) used to be ignored silently, so a study ran without its
analyses or against the wrong baseline; ``train.max_steps=abc`` ended in a traceback. The experiment YAML
and the ``train`` config are checked with these helpers: an unknown key is reported with the nearest valid
one (``difflib``), a wrong type or range with the value.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from ssl_radiology.errors import UserError


def nearest(key: str, valid: Iterable[str], what: str = "key") -> str:
    """``"nearest valid key: 'analyze'"`` for ``analyse``; every valid one when nothing is close."""
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if close:
        return f"nearest valid {what}: '{close[0]}'"
    return f"valid {what}s: {', '.join(valid) or 'none'}"


def mapping(value: Any, where: str, allowed: Iterable[str], required: Iterable[str] = ()) -> dict[str, Any]:
    """``value`` as a dict whose keys are all in ``allowed`` and include every ``required`` key."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    allowed = list(allowed)
    for key in value:
        if key not in allowed:
            raise UserError(f"{where}: unknown key '{key}' ({nearest(str(key), allowed)})")
    for key in required:
        if value.get(key) is None:
            raise UserError(f"{where}: missing required key '{key}'")
    return dict(value)


def names(value: Any, where: str) -> dict[str, Any]:
    """A mapping of user-chosen names (pretrain runs, inits) to their settings."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: expected a mapping of names, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not key or "/" in key:
            raise UserError(f"{where}: '{key}' is not a valid name (a non-empty string without '/')")
    return dict(value)


def as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def integer(value: Any, where: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise UserError(f"{where}: must be ≥ {minimum}, got {value}")
    return int(value)


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{where}: expected a number, got {value!r}")
    return float(value)


def fraction(value: Any, where: str) -> float:
    result = number(value, where)
    if not 0.0 < result <= 1.0:
        raise UserError(f"{where}: fractions must be in (0, 1], got {value}")
    return result


def text(value: Any, where: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool) or value == "":
        raise UserError(f"{where}: expected a non-empty string, got {value!r}")
    return str(value)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against a request field's type (``int | None``, ``tuple[float, ...]``, ...)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(annotation)):
            return None
        return _coerce(value, options[0], where)
    if origin is tuple:
        item = typing.get_args(annotation)[0]
        items = value.split(",") if isinstance(value, str) else as_list(value)
        return tuple(_coerce(v.strip() if isinstance(v, str) else v, item, where) for v in items)
    if annotation is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        return integer(value, where)
    if annotation is float:
        return number(value, where)
    return text(value, where)


def request_args(args: Any, request_type: type, where: str, exclude: Iterable[str]) -> dict[str, Any]:
    """An ``args:`` mapping (flag names, ``max-steps`` or ``max_steps``) as checked fields of a request."""
    hints = typing.get_type_hints(request_type)
    allowed = {f.name for f in fields(request_type)} - set(exclude)
    for key in args or {}:
        if str(key).replace("-", "_") in exclude:
            raise UserError(
                f"{where}: '{key}' is set by the experiment itself, not in args (see the entry's keys)"
            )
    args = mapping(args, where, sorted({*allowed, *(a.replace("_", "-") for a in allowed)}))
    out = {}
    for key, value in args.items():
        name = str(key).replace("-", "_")
        out[name] = _coerce(value, hints[name], f"{where}.{key}")
    return out
