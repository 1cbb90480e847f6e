"""Per-seed result rows on disk: the unit of resume and the input of ``ssl-rad compare``.

Each finished (condition, protocol, task, subset, seed) is one JSON file under ``OUT/seeds/`` holding its rows
(one per metric), the resolved config and the checkpoint's content hash. It is written atomically, so a run
killed mid-way loses at most the seed in progress, and a re-run skips every seed whose file exists.
``OUT/results.csv`` is rebuilt from the seed files after each write; it is what ``compare`` reads.
A seed file made from a different checkpoint under the same name is refused instead of overwritten or
mixed, because a table row must describe exactly one set of weights.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_radiology.errors import UserError

COLUMNS = [
    "name",
    "checkpoint",
    "checkpoint_hash",
    "backbone",
    "protocol",
    "task",
    "fraction",
    "shots",
    "seed",
    "metric",
    "value",
]


@dataclass(frozen=True)
class SeedKey:
    """Identity of one seed's evaluation; ``protocol`` is the family (``knn``, ``linear-logreg``, ...),
    ``subset`` is ``frac<F>`` or ``shots<K>``."""

    name: str
    protocol: str
    task: str
    fraction: float | None
    shots: int | None
    seed: int

    @property
    def subset(self) -> str:
        return f"shots{self.shots}" if self.shots else f"frac{self.fraction:g}"

    @property
    def filename(self) -> str:
        parts = [self.name, self.protocol, self.task, self.subset, f"seed{self.seed}"]
        return "__".join(re.sub(r"[^A-Za-z0-9._=-]+", "-", p) for p in parts) + ".json"


class ResultStore:
    """The seed files and the merged table of one ``--out`` folder."""

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.root = Path(out_dir)
        self.seed_dir = self.root / "seeds"

    def done(self, key: SeedKey, checkpoint_hash: str) -> bool:
        """True when this seed is already finished for the same checkpoint; refuse a different checkpoint."""
        path = self.seed_dir / key.filename
        if not path.is_file():
            return False
        try:
            stored = json.loads(path.read_text())["checkpoint_hash"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise UserError(f"{path}: unreadable result file ({exc}); delete it to re-run this seed") from exc
        if stored != checkpoint_hash:
            raise UserError(
                f"{path}: results for '{key.name}' come from checkpoint {stored}, but this checkpoint hashes to "
                f"{checkpoint_hash}; use another --name or --out"
            )
        return True

    def write(
        self, key: SeedKey, meta: dict[str, Any], metrics: dict[str, dict[str, float]], config: dict
    ) -> Path:
        """Store one finished seed (atomic), then rebuild ``results.csv``.

        ``metrics`` maps each protocol this seed produced (``knn-k20``, ``linear-logreg``, ...) to its
        metric values; ``key.protocol`` names the command's family that is skipped on resume.
        """
        rows = [
            {
                **meta,
                "name": key.name,
                "protocol": protocol,
                "task": key.task,
                "fraction": key.fraction,
                "shots": key.shots,
                "seed": key.seed,
                "metric": metric,
                "value": float(value),
            }
            for protocol, values in metrics.items()
            for metric, value in values.items()
        ]
        payload = {"checkpoint_hash": meta["checkpoint_hash"], "config": config, "rows": rows}
        self.seed_dir.mkdir(parents=True, exist_ok=True)
        path = self.seed_dir / key.filename
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=1, default=str))
        os.replace(tmp, path)
        self.rebuild()
        return path

    def rows(self) -> pd.DataFrame:
        """All rows of all seed files in this folder."""
        rows: list[dict] = []
        for path in sorted(self.seed_dir.glob("*.json")):
            rows.extend(json.loads(path.read_text())["rows"])
        return pd.DataFrame(rows, columns=COLUMNS)

    def rebuild(self) -> Path:
        path = self.root / "results.csv"
        tmp = path.with_suffix(".csv.tmp")
        self.rows().to_csv(tmp, index=False)
        os.replace(tmp, path)
        return path


def load_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Rows of a result folder (its seed files) or of a ``results.csv`` file."""
    path = Path(path)
    if path.is_dir():
        if not (path / "seeds").is_dir():
            raise UserError(f"{path}: no seeds/ folder; not an evaluation --out folder")
        return ResultStore(path).rows().assign(source=str(path))
    if path.suffix == ".csv" and path.is_file():
        return pd.read_csv(path).assign(source=str(path))
    raise UserError(f"{path}: not an evaluation result folder or results.csv")
