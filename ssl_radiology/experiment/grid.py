"""Pre-training-scale grids: data fraction × backbone × source domain, without listing every run by hand.

``grid: {name, method, data: {domain: source}, fractions, backbones, seeds, args, overrides}`` becomes one
pre-training entry (and one init of the same name) per point, named ``<name>-<domain>-<backbone>-frac<F>``;
each point keeps ``fraction`` of its source's patients (nested subsets, see ``data.subsets``). The points
are kept on the spec (:class:`GridPoint`) so the report can plot metric against pre-training data size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ssl_radiology import checks as schema
from ssl_radiology.errors import UserError

GRID_KEYS = ("name", "method", "data", "fractions", "backbones", "seeds", "args", "overrides", "image_size")


@dataclass(frozen=True)
class GridPoint:
    """One point of a scaling grid: its pre-training entry / init name and coordinates."""

    grid: str
    init: str
    domain: str
    source: str
    backbone: str
    fraction: float


def expand_grids(
    raw: Any, where: str, image_size: int, make_run: Callable[[str, dict, str, str, int], Any]
) -> tuple[list[Any], list[GridPoint]]:
    """``(pretrain runs, points)`` of one grid mapping or a list of them; ``make_run`` builds each run
    from an ordinary pre-training entry (so grid runs are checked exactly like hand-written ones)."""
    runs: list[Any] = []
    points: list[GridPoint] = []
    grids = raw if isinstance(raw, list) else ([] if raw is None else [raw])
    for i, grid in enumerate(grids):
        at = f"{where}[{i}]" if isinstance(raw, list) else where
        grid = schema.mapping(
            grid, at, GRID_KEYS, required=("name", "method", "data", "fractions", "backbones")
        )
        name = schema.text(grid["name"], f"{at}.name")
        data = schema.names(grid["data"], f"{at}.data")
        if not data:
            raise UserError(f"{at}.data: give at least one domain: source")
        fractions = [schema.fraction(f, f"{at}.fractions") for f in schema.as_list(grid["fractions"])]
        backbones = [schema.text(b, f"{at}.backbones") for b in schema.as_list(grid["backbones"])]
        for domain, source in data.items():
            for backbone in backbones:
                for fraction in fractions:
                    run_name = f"{name}-{domain}-{backbone}-frac{fraction:g}"
                    entry = {
                        "method": grid["method"],
                        "data": [schema.text(source, f"{at}.data.{domain}")],
                        "backbone": backbone,
                        "image_size": grid.get("image_size", image_size),
                        "fraction": fraction,
                        **{k: grid[k] for k in ("seeds", "args", "overrides") if k in grid},
                    }
                    runs.append(make_run(run_name, entry, at, backbone, image_size))
                    points.append(GridPoint(name, run_name, str(domain), str(source), backbone, fraction))
    return runs, points
