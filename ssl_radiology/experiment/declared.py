"""What an experiment declares before it sees a number: paired comparisons and the primary endpoint.

Declaring them in the YAML (checked against the study's inits, targets, protocols and subsets) is what
lets the report lead with them instead of with whichever condition happened to win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssl_radiology import checks as schema
from ssl_radiology.errors import UserError


@dataclass(frozen=True)
class Endpoint:
    """The declared primary endpoint: ``a`` vs ``b`` on one target, protocol, subset and metric."""

    a: str
    b: str
    target: str
    protocol: str
    metric: str
    fraction: float | None = None
    shots: int | None = None


def comparisons(raw: Any, where: str, init_names: set[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for i, pair in enumerate(schema.as_list(raw)):
        items = schema.as_list(pair)
        if len(items) != 2:
            raise UserError(f"{where}[{i}]: expected a pair [a, b] of init names, got {pair!r}")
        a, b = (schema.text(x, f"{where}[{i}]") for x in items)
        for name in (a, b):
            if name not in init_names:
                raise UserError(
                    f"{where}[{i}]: unknown init '{name}' (declared: {', '.join(sorted(init_names))})"
                )
        if a == b:
            raise UserError(f"{where}[{i}]: compares '{a}' with itself")
        pairs.append((a, b))
    return tuple(pairs)


def endpoint(raw: Any, where: str, spec: dict[str, Any]) -> Endpoint | None:
    if raw is None:
        return None
    keys = ("a", "b", "target", "protocol", "fraction", "shots", "metric")
    raw = schema.mapping(raw, where, keys, required=("a", "b", "target", "protocol", "metric"))
    a, b, target, protocol, metric = (
        schema.text(raw[k], f"{where}.{k}") for k in ("a", "b", "target", "protocol", "metric")
    )
    for key, value, valid in (
        ("a", a, spec["inits"]), ("b", b, spec["inits"]), ("target", target, spec["targets"]),
        ("protocol", protocol, spec["protocols"]),
    ):  # fmt: skip
        if value not in valid:
            raise UserError(
                f"{where}.{key}: '{value}' is not declared (declared: {', '.join(sorted(valid))})"
            )
    if (raw.get("fraction") is None) == (raw.get("shots") is None):
        raise UserError(f"{where}: give exactly one of 'fraction' or 'shots'")
    fraction = None if raw.get("fraction") is None else schema.fraction(raw["fraction"], f"{where}.fraction")
    shots = None if raw.get("shots") is None else schema.integer(raw["shots"], f"{where}.shots", 1)
    proto = spec["protocols"][protocol]
    if (fraction is not None and fraction not in proto.fractions) or (
        shots is not None and shots not in proto.shots
    ):
        raise UserError(
            f"{where}: protocol {protocol} does not evaluate that subset (fractions {list(proto.fractions)}, shots {list(proto.shots)})"
        )
    skipped = [n for n in (a, b) if proto.inits and n not in proto.inits]
    skipped += [target] if proto.targets and target not in proto.targets else []
    if skipped:
        raise UserError(
            f"{where}: protocol {protocol} does not evaluate {', '.join(skipped)} (its inits / targets)"
        )
    return Endpoint(a, b, target, protocol, metric, fraction, shots)
