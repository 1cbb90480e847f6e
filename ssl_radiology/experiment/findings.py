"""What a study's numbers support: the declared endpoint, declared comparisons, baseline checks and health.

The report is generated, never written by hand, and it must not pick the condition that happened to win
and then test it (that inflates false positives). So it leads with what the experiment YAML declared before
any result existed: the primary ``endpoint`` (one paired test, no correction) and the ``comparisons`` (one
Holm family). Everything else is secondary. Every pre-trained condition is also checked against the trivial
baselines a reviewer asks about first: raw pixels (kNN / linear) and the same network trained from scratch
(fine-tune of ``random``), because a representation that does not beat its own pixels is a finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ssl_radiology.evaluation.compare import CELL, N_BOOTSTRAP, pair_table
from ssl_radiology.experiment.cells import pretrain_cells
from ssl_radiology.experiment.spec import Endpoint, ExperimentSpec
from ssl_radiology.models.provenance import read_health

#: the result variant a protocol family is judged by (the full table keeps every k and both linear heads)
VARIANT = {"knn": "knn-k20", "linear-eval": "linear-logreg", "finetune": "finetune"}
PREFIX = {"knn": "knn-", "linear-eval": "linear-", "finetune": "finetune"}
SIGNIFICANCE = 0.05


def protocol_variant(family: str, available: set[str]) -> str | None:
    """The result protocol that stands for a family: ``knn`` → ``knn-k20`` (else the first ``knn-*``)."""
    if VARIANT.get(family) in available:
        return VARIANT[family]
    candidates = sorted(p for p in available if p.startswith(PREFIX.get(family, family)))
    return candidates[0] if candidates else None


def subset_label(fraction: float | None, shots: int | None) -> str:
    """The ``subset`` value ``compare.gather`` gives rows of this fraction / shot count."""
    return f"{int(shots)}-shot" if shots else f"{float(fraction or 1.0):g}"


def raw_pixel_inits(spec: ExperimentSpec) -> list[str]:
    return [i.name for i in spec.inits if (i.spec or "").split(":", 1)[0] == "raw-pixels"]


def scratch_inits(spec: ExperimentSpec) -> list[str]:
    return [i.name for i in spec.inits if i.spec == "random"]


@dataclass(frozen=True)
class EndpointResult:
    endpoint: Endpoint
    protocol: str | None
    subset: str
    pair: pd.Series | None  # a row of compare.pair_table


def endpoint_result(rows: pd.DataFrame, endpoint: Endpoint, bootstrap: int = N_BOOTSTRAP) -> EndpointResult:
    """The declared primary comparison, evaluated on its own (no multiplicity correction: it is one test)."""
    subset = subset_label(endpoint.fraction, endpoint.shots)
    cell = rows[
        (rows["task"] == endpoint.target) & (rows["subset"] == subset) & (rows["metric"] == endpoint.metric)
    ]
    protocol = protocol_variant(endpoint.protocol, set(cell["protocol"]))
    cell = cell[cell["protocol"] == protocol]
    table = pair_table(cell, [(endpoint.a, endpoint.b)], bootstrap)
    return EndpointResult(endpoint, protocol, subset, table.iloc[0] if len(table) else None)


def _ci(low: float, high: float) -> str:
    return f"[{low:+.3f}, {high:+.3f}]" if np.isfinite(low) else "(no interval: predictions not stored)"


def endpoint_lines(result: EndpointResult, flags: dict[str, str], pretrained: set[str]) -> list[str]:
    """Plain sentences on the primary endpoint: the numbers, what they support, and what they do not.

    ``flags``: warnings per condition (collapsed pre-training, overlap, not converged); ``pretrained``:
    the conditions whose replicates are pre-training runs (fewer than 3 is worth saying)."""
    e = result.endpoint
    what = f"{e.a} vs {e.b} on {e.target} · {result.protocol or e.protocol} · {result.subset} · {e.metric}"
    if result.pair is None:
        return [f"**Primary endpoint** ({what}): not evaluated yet (no results for both conditions)."]
    r = result.pair
    lines = [
        f"**Primary endpoint** ({what}), declared in the experiment file before the run:",
        "",
        f"- {e.a}: {r['mean_a']:.3f} (n = {int(r['n_a'])} independent replicate(s)); "
        f"{e.b}: {r['mean_b']:.3f} (n = {int(r['n_b'])}).",
        f"- Δ = {r['delta']:+.3f}, 95 % CI {_ci(r['delta_low'], r['delta_high'])} (paired bootstrap over test "
        f"patients and replicates), two-sided p = {r['p_boot']:.3g}.",
    ]
    if np.isfinite(r["delta_low"]):
        if r["delta_low"] > 0 or r["delta_high"] < 0:
            winner = e.a if r["delta_low"] > 0 else e.b
            lines.append(
                f"- The interval excludes 0: on these test patients **{winner}** is better on this endpoint. "
                "This supports a difference in this setting (task, protocol, data fraction, backbone), not in "
                "general."
            )
        else:
            bound = max(abs(r["delta_low"]), abs(r["delta_high"]))
            lines.append(
                f"- The interval includes 0: the data **do not show a difference**. A difference larger than "
                f"{bound:.3f} in either direction is unlikely given these data; a smaller one is not excluded."
            )
    for name, n in ((e.a, r["n_a"]), (e.b, r["n_b"])):
        if name in pretrained and n < 3:
            lines.append(
                f"- {name} has {int(n)} pre-training replicate(s): run-to-run variation is poorly estimated."
            )
    for name in (e.a, e.b):
        if flags.get(name):
            lines.append(f"- Caveat for {name}: {flags[name]}; the comparison says little about the method.")
    return lines


def declared_table(
    rows: pd.DataFrame, heads: pd.DataFrame, spec: ExperimentSpec, bootstrap: int
) -> pd.DataFrame:
    """The declared ``comparisons`` in every headline cell: one Holm family."""
    keep = heads[CELL].drop_duplicates()
    cells = rows.merge(keep, on=CELL, how="inner")
    return pair_table(cells, list(spec.comparisons), bootstrap)


def baseline_checks(
    rows: pd.DataFrame, heads: pd.DataFrame, spec: ExperimentSpec, bootstrap: int
) -> pd.DataFrame:
    """Each pre-trained condition against raw pixels (frozen protocols) or from-scratch (fine-tune).

    ``verdict`` is "no better than raw pixels" / "no better than from-scratch" unless the paired interval of
    Δ lies above 0 (without stored predictions: unless the mean is higher).
    """
    raw, scratch = raw_pixel_inits(spec), scratch_inits(spec)
    references = set(raw) | set(scratch)
    keep = heads[CELL].drop_duplicates()
    cells = rows.merge(keep, on=CELL, how="inner")
    records = []
    for (protocol, task, subset, metric), cell in cells.groupby(CELL, sort=True):
        refs, word = (scratch, "from-scratch") if protocol.startswith("finetune") else (raw, "raw pixels")
        present = [r for r in refs if r in set(cell["name"])]
        if not present:
            continue
        names = sorted(set(cell["name"]) - references)
        pairs = pair_table(cell, [(n, present[0]) for n in names], bootstrap)
        for r in pairs.itertuples():
            better = r.delta_low > 0 if np.isfinite(r.delta_low) else r.delta > 0
            records.append(
                {"condition": r.a, "protocol": protocol, "task": task, "data": subset, "metric": metric,
                 "reference": r.b, "Δ": r.delta, "low": r.delta_low, "high": r.delta_high,
                 "verdict": f"better than {word}" if better else f"no better than {word}"}
            )  # fmt: skip
    return pd.DataFrame(records)


def health_table(spec: ExperimentSpec, out: Path) -> pd.DataFrame:
    """One row per pre-training replicate: its recorded health (``unknown`` when it recorded none)."""
    records = []
    for cell in pretrain_cells(spec, out):
        if not cell.out.is_dir():
            continue
        health = read_health(cell.out) or {}
        records.append(
            {
                "run": cell.id.split("/", 1)[1],
                "status": str(health.get("status", "unknown")),
                "loss start": _rounded(health.get("loss_start")),
                "loss end": _rounded(health.get("loss_end")),
                "chance loss": _rounded(health.get("chance_loss")),
                "message": str(health.get("message", "")),
            }
        )
    return pd.DataFrame(records)


def _rounded(value: object) -> object:
    """Losses to 4 decimals for the table (the full values stay in each run's ``health.json``)."""
    return round(float(value), 4) if isinstance(value, int | float) else value
