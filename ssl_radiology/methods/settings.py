"""Typed rules for the ``method`` settings, checked before any model or data work.

Why a small rule table instead of ``int(settings[...])`` where a value is used: a value such as
``method.head.out_dim=-5``, ``64.5``, ``abc`` or ``base_lr=nan`` must stop the run with one line naming the
key, not a traceback deep inside a layer constructor (or, worse, a run that silently rounds 64.5 to 64).
Each method class lists its keys in ``schema`` (dotted paths into the ``method`` section); keys that no
rule names are refused too, so a misspelt key in a user's YAML file cannot be ignored silently.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ssl_radiology.errors import UserError

_ABSENT = object()


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One setting's type and range. ``optional``: the key may be missing or ``null``."""

    optional: bool = False

    def describe(self) -> str:
        raise NotImplementedError

    def valid(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, key: str, value: Any) -> None:
        if value is _ABSENT or value is None:
            if not self.optional:
                raise UserError(f"{key} must be {self.describe()}, but it is not set")
            return
        if not self.valid(value):
            raise UserError(f"{key} must be {self.describe()}, got {_show(value)}")


def _bounds_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '≥'} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '≤'} {high:g}")
    return " and ".join(parts)


def _in_bounds(x: float, low: float | None, high: float | None, low_open: bool, high_open: bool) -> bool:
    if low is not None and (x <= low if low_open else x < low):
        return False
    return not (high is not None and (x >= high if high_open else x > high))


@dataclass(frozen=True, kw_only=True)
class Int(Rule):
    """A whole number (``64.0`` passes, ``64.5``, ``True`` and ``"64"`` do not) within ``[low, high]``."""

    low: int | None = None
    high: int | None = None

    def describe(self) -> str:
        if self.low == 1 and self.high is None:
            return "a positive integer"
        if self.low == 0 and self.high is None:
            return "a non-negative integer"
        bounds = _bounds_text(self.low, self.high, False, False)
        return f"an integer {bounds}" if bounds else "an integer"

    def valid(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            return False
        return _in_bounds(value, self.low, self.high, False, False)


@dataclass(frozen=True, kw_only=True)
class Float(Rule):
    """A finite number (never nan / inf) within the bounds; ``*_open`` makes a bound exclusive."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        bounds = _bounds_text(self.low, self.high, self.low_open, self.high_open)
        return f"a finite number {bounds}" if bounds else "a finite number"

    def valid(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        return _in_bounds(float(value), self.low, self.high, self.low_open, self.high_open)


@dataclass(frozen=True, kw_only=True)
class Bool(Rule):
    def describe(self) -> str:
        return "true or false"

    def valid(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class Text(Rule):
    def describe(self) -> str:
        return "a non-empty string"

    def valid(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value)


class OneOf(Rule):
    """One of a fixed set of values (an enum: optimizer names, loss kinds, ...)."""

    def __init__(self, *values: Any, optional: bool = False) -> None:
        object.__setattr__(self, "optional", optional)
        object.__setattr__(self, "values", tuple(values))

    def describe(self) -> str:
        return "one of " + ", ".join(_show(v) for v in self.values)  # type: ignore[attr-defined]

    def valid(self, value: Any) -> bool:
        return any(value == v and type(value) is type(v) for v in self.values)  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class Pair(Rule):
    """Two numbers, each satisfying ``item``, with ``first <= second`` when ``ordered`` (scale ranges)."""

    item: Float = Float()
    ordered: bool = True

    def describe(self) -> str:
        order = "min ≤ max, " if self.ordered else ""
        return f"a pair [a, b] ({order}each {self.item.describe()})"

    def valid(self, value: Any) -> bool:
        if not isinstance(value, list | tuple) or len(value) != 2:
            return False
        if not all(self.item.valid(v) for v in value):
            return False
        return not self.ordered or value[0] <= value[1]


@dataclass(frozen=True, kw_only=True)
class Section(Rule):
    """A mapping whose contents another module checks (e.g. ``init``, written by continued pre-training)."""

    def describe(self) -> str:
        return "a mapping of settings"

    def valid(self, value: Any) -> bool:
        return isinstance(value, Mapping)


def lookup(settings: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` or ``_ABSENT``."""
    node: Any = settings
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def leaf_keys(settings: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys of every non-mapping value (lists are leaves)."""
    keys = []
    for name, value in settings.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value:
            keys += leaf_keys(value, key + ".")
        else:
            keys.append(key)
    return keys


def check_schema(settings: Mapping[str, Any], schema: Mapping[str, Rule], prefix: str = "method") -> None:
    """Raise one ``UserError`` for the first unknown key or value that breaks its rule."""
    sections = [key for key, rule in schema.items() if isinstance(rule, Section)]
    for key in leaf_keys(settings):
        if key not in schema and not any(key.startswith(f"{section}.") for section in sections):
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f"; did you mean {prefix}.{close[0]}?" if close else ""
            raise UserError(f"{prefix}.{key}: unknown setting for method '{settings.get('name')}'{hint}")
    for key, rule in schema.items():
        rule.check(f"{prefix}.{key}", lookup(settings, key))


def check_views(
    settings: Mapping[str, Any], n_global: tuple[int, int | None], n_local: tuple[int, int | None]
) -> None:
    """Crop counts a method can use: ``(min, max)`` inclusive, ``max=None`` for no upper bound."""
    name = settings.get("name")
    for key, (low, high) in (("n_global", n_global), ("n_local", n_local)):
        value = int(lookup(settings, f"views.{key}"))
        if value < low or (high is not None and value > high):
            allowed = str(low) if low == high else f"≥ {low}" if high is None else f"in [{low}, {high}]"
            raise UserError(f"method.views.{key} must be {allowed} for {name}, got {value}")
