"""Did a pre-training run learn anything? ``health.json`` from the logged loss and collapse monitors.

A self-supervised loss has a value that a model which learnt nothing reaches: DINO's ``ln K`` (teacher and
student uniform over the K prototypes), SimCLR's ``ln(2B − 1)`` (uniform similarity to the 2B − 1 other
views of the global batch), MAE's predict-the-mean error. Each method logs it as ``health/chance_loss``.
A run whose loss ends within ``margin`` of that value never left its plateau; a run whose embeddings
collapsed to one point (``collapse/embedding_std`` below ``min_std``) or whose DINO teacher output is
uniform / one-hot (``collapse/teacher_entropy`` outside ``entropy_range``) collapsed, whatever its loss.
The verdict travels with the checkpoint, so every evaluation built on the run can repeat it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: a loss within this fraction of the chance value (or of the start, without one) has not left the plateau
PLATEAU_MARGIN = 0.05


def _last(history: Sequence[dict[str, float]], key: str) -> float | None:
    for row in reversed(history):
        value = row.get(key)
        if value is not None and math.isfinite(value):
            return float(value)
    return None


def assess(
    method: str,
    history: Sequence[dict[str, float]],
    *,
    min_std: float = 0.05,
    entropy_range: Sequence[float] = (0.01, 0.99),
    margin: float = PLATEAU_MARGIN,
) -> dict[str, Any]:
    """``{"method", "status", "loss_start", "loss_end", "chance_loss", "checks", "message"}``.

    ``history`` holds the logged interval means (``step``, ``train/loss``, ``collapse/*``,
    ``health/chance_loss``). ``status`` is ``collapsed``, ``plateau``, ``ok``, or ``unknown`` when nothing
    was logged.
    """
    rows = [row for row in history if math.isfinite(row.get("train/loss", math.nan))]
    if not rows:
        return {
            "method": method,
            "status": "unknown",
            "loss_start": None,
            "loss_end": None,
            "chance_loss": None,
            "checks": {},
            "message": "no finite training loss was logged",
        }
    start, end = float(rows[0]["train/loss"]), float(rows[-1]["train/loss"])
    chance = _last(rows, "health/chance_loss")
    std = _last(rows, "collapse/embedding_std")
    entropy = _last(rows, "collapse/teacher_entropy")
    low, high = (float(v) for v in entropy_range)
    reference = chance if chance is not None else start
    left_plateau = end < reference - margin * abs(reference)
    checks: dict[str, Any] = {
        "steps": int(rows[-1]["step"]) + 1,
        "embedding_std_end": std,
        "min_std": float(min_std),
        "teacher_entropy_end": entropy,
        "entropy_range": [low, high],
        "plateau_reference": "chance_loss" if chance is not None else "loss_start",
        "plateau_margin": float(margin),
        "left_plateau": bool(left_plateau),
    }
    problems = []
    if std is not None and std < min_std:
        problems.append(f"embedding std {std:.4f} < {min_std}")
    if entropy is not None and not low < entropy < high:
        problems.append(f"teacher entropy {entropy:.4f} outside ({low}, {high})")
    if problems:
        status, message = "collapsed", "representation collapsed: " + "; ".join(problems)
    elif not left_plateau:
        what = f"chance value {chance:.4f}" if chance is not None else f"starting loss {start:.4f}"
        status = "plateau"
        message = f"loss {end:.4f} never went {margin:.0%} below the {what}"
    else:
        status, message = "ok", f"loss {start:.4f} → {end:.4f} (chance {reference:.4f}), no collapse"
    return {
        "method": method,
        "status": status,
        "loss_start": start,
        "loss_end": end,
        "chance_loss": chance,
        "checks": checks,
        "message": message,
    }
