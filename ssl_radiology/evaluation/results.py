"""Per-seed result rows on disk: the unit of resume and the input of ``ssl-rad compare``.

Each finished (condition, protocol, task, subset, [pre-training replicate,] seed) is one JSON file under
``OUT/seeds/`` holding its rows (one per metric), the resolved config and the checkpoint's content hash, and
beside it an ``.npz`` with the test images' scores, labels and patient keys (what a paired patient-level
bootstrap needs; written first, so the JSON stays the "done" marker). Both are written atomically, so a run
killed mid-way loses at most the seed in progress, and a re-run skips every seed whose file exists.

Every row repeats where its numbers come from (contract 5): ``pretrain_seed`` (the pre-training replicate;
empty for fixed checkpoints), ``init_hash`` (weights a continued pre-training started from), ``health`` (the
pre-training health status), ``overlap`` (test patients also seen in pre-training; only non-zero with
``--allow-overlap``) and, for fine-tuning, ``converged`` (False when the best validation step was the last).
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

import numpy as np
import pandas as pd

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.bootstrap import Predictions

COLUMNS = [
    "name",
    "checkpoint",
    "checkpoint_hash",
    "init_hash",
    "backbone",
    "pretrain_seed",
    "health",
    "overlap",
    "protocol",
    "task",
    "fraction",
    "shots",
    "seed",
    "metric",
    "value",
    "converged",
    "predictions",
]
#: per-protocol values lifted from the metrics into a column of every row of that protocol
ROW_FLAGS = ("converged",)


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
    pretrain_seed: int | None = None

    @property
    def subset(self) -> str:
        return f"shots{self.shots}" if self.shots else f"frac{self.fraction:g}"

    @property
    def filename(self) -> str:
        parts = [self.name, self.protocol, self.task, self.subset]
        if self.pretrain_seed is not None:
            parts.append(f"pretrain{self.pretrain_seed}")
        parts.append(f"seed{self.seed}")
        return "__".join(re.sub(r"[^A-Za-z0-9._=-]+", "-", p) for p in parts) + ".json"


def collect_predictions(task: Any, query: np.ndarray, probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays stored per seed for the paired bootstrap: test rows only (not OOD), in task row order.

    ``task`` is an evaluation ``Task``; ``probs`` maps each protocol to its (len(query), C) scores."""
    test = task.split[query] == "test"
    rows = query[test]
    arrays = {"sample": rows, "patients": task.patients[rows].astype(str), "labels": task.labels[rows]}
    if task.label_mask is not None:
        arrays["mask"] = np.asarray(task.label_mask[rows], bool)
    arrays.update({f"scores/{p}": np.asarray(v, np.float64)[test] for p, v in probs.items()})
    return arrays


def read_predictions(path: str | os.PathLike[str], protocol: str) -> Predictions:
    """One protocol's stored test predictions (see :func:`collect_predictions`)."""
    with np.load(path, allow_pickle=False) as data:
        if f"scores/{protocol}" not in data:
            raise UserError(f"{path}: no stored scores for protocol {protocol}")
        return Predictions(
            sample=data["sample"],
            patients=data["patients"],
            labels=data["labels"],
            scores=data[f"scores/{protocol}"].astype(np.float64),
            mask=data.get("mask"),
        )


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
        self,
        key: SeedKey,
        meta: dict[str, Any],
        metrics: dict[str, dict[str, float]],
        config: dict,
        predictions: dict[str, np.ndarray] | None = None,
    ) -> Path:
        """Store one finished seed (atomic), then rebuild ``results.csv``.

        ``metrics`` maps each protocol this seed produced (``knn-k20``, ``linear-logreg``, ...) to its
        metric values; ``key.protocol`` names the command's family that is skipped on resume.
        ``predictions`` (from :func:`collect_predictions`) go to ``<seed file>.npz``.
        """
        self.seed_dir.mkdir(parents=True, exist_ok=True)
        path = self.seed_dir / key.filename
        npz = path.with_suffix(".npz")
        if predictions is not None:
            tmp_npz = path.with_suffix(".npz.tmp")
            with tmp_npz.open("wb") as handle:
                np.savez_compressed(handle, **predictions)
            os.replace(tmp_npz, npz)
        rows = [
            {
                **meta,
                "name": key.name,
                "pretrain_seed": key.pretrain_seed,
                "protocol": protocol,
                "task": key.task,
                "fraction": key.fraction,
                "shots": key.shots,
                "seed": key.seed,
                "metric": metric,
                "value": float(value),
                **{flag: bool(values[flag]) for flag in ROW_FLAGS if flag in values},
                "predictions": npz.name if predictions is not None else None,
            }
            for protocol, values in metrics.items()
            for metric, value in values.items()
        ]
        payload = {"checkpoint_hash": meta["checkpoint_hash"], "config": config, "rows": rows}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(payload, indent=1, default=str))
        os.replace(tmp, path)
        self.rebuild()
        return path

    def rows(self) -> pd.DataFrame:
        """All rows of all seed files in this folder."""
        rows: list[dict] = []
        for path in sorted(self.seed_dir.glob("*.json")):
            try:
                rows.extend(json.loads(path.read_text())["rows"])
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise UserError(
                    f"{path}: unreadable result file ({type(exc).__name__}: {exc}); delete it to re-run that seed"
                ) from exc
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
        rows, seed_dir = ResultStore(path).rows(), path / "seeds"
    elif path.suffix == ".csv" and path.is_file():
        rows, seed_dir = pd.read_csv(path).reindex(columns=COLUMNS), path.parent / "seeds"
    else:
        raise UserError(f"{path}: not an evaluation result folder or results.csv")
    rows["predictions"] = [
        str(seed_dir / name) if isinstance(name, str) and (seed_dir / name).is_file() else None
        for name in rows["predictions"]
    ]
    return rows.assign(source=str(path))
