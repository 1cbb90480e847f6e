"""``report.md``: what the study's numbers support, led by the declared endpoint, then every number behind it.

Nothing in the report is written by hand: every sentence is generated from the results, so a report can
never claim more than its numbers show. Order (see ``findings`` for why): the declared primary endpoint
(paired Δ, patient-bootstrap CI, p), a generated summary of what is and is not supported, the declared
comparisons (one Holm family), pre-training health, the raw-pixel and from-scratch baseline checks, the
secondary table of every condition, the fraction curves, a scaling plot for ``grid`` studies, then the
feature-space figures. Replicates are pre-training runs (evaluation seeds averaged within them first).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.compare import (
    CELL,
    N_BOOTSTRAP,
    comparison_table,
    display_frame,
    flags,
    gather,
    to_markdown,
    write_outputs,
)
from ssl_radiology.evaluation.stats import holm
from ssl_radiology.experiment import findings
from ssl_radiology.experiment.cells import DONE_FILE, expand_cells, run_dir
from ssl_radiology.experiment.spec import ExperimentSpec
from ssl_radiology.models.provenance import read_n_images

#: the metric a study is judged by, per task kind, in order of preference
HEADLINE_METRICS = ("accuracy", "auroc_mean")
SIGNIFICANCE = 0.05


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the first headline metric each headline (protocol, task, subset) reports."""
    available = set(table["protocol"])
    chosen = {findings.protocol_variant(family, available) for family in findings.VARIANT} - {None}
    if chosen:
        table = table[table["protocol"].isin(chosen)]
    keep = []
    for _, cell in table.groupby(["protocol", "task", "subset"], sort=True):
        metric = next((m for m in HEADLINE_METRICS if m in set(cell["metric"])), None)
        if metric is not None:
            keep.append(cell[cell["metric"] == metric])
    if not keep:
        return table.iloc[0:0]
    heads = pd.concat(keep, ignore_index=True)
    heads["p_holm"] = np.nan  # the secondary family: every headline comparison with the baseline
    for _, family in heads.groupby("metric"):
        heads.loc[family.index, "p_holm"] = holm(family["p_boot"].to_numpy())
    return heads


def _condition_flags(table: pd.DataFrame) -> dict[str, str]:
    """Warnings per condition over all its cells (worst health, overlap, unconverged fine-tunes)."""
    out = {}
    for name, group in table.groupby("name"):
        words = sorted(
            {w for record in group.itertuples() for w in flags(pd.Series(record._asdict())).split("; ") if w}
        )
        if words:
            out[str(name)] = "; ".join(words)
    return out


def _pair_frame(pairs: pd.DataFrame) -> pd.DataFrame:
    def interval(lo: float, hi: float) -> str:
        return f"[{lo:+.4f}, {hi:+.4f}]" if np.isfinite(lo) else ""

    return pd.DataFrame(
        {
            "comparison": [f"{a} − {b}" for a, b in zip(pairs["a"], pairs["b"], strict=True)],
            "task": pairs["task"],
            "protocol": pairs["protocol"],
            "data": pairs["subset"],
            "metric": pairs["metric"],
            "n (a, b)": [f"{int(x)}, {int(y)}" for x, y in zip(pairs["n_a"], pairs["n_b"], strict=True)],
            "Δ": [f"{d:+.4f}" for d in pairs["delta"]],
            "95% CI (patients × runs)": [
                interval(lo, hi) for lo, hi in zip(pairs["delta_low"], pairs["delta_high"], strict=True)
            ],
            "p": [f"{p:.3g}" if np.isfinite(p) else "" for p in pairs["p_boot"]],
            "p (Holm)": [f"{p:.3g}" if np.isfinite(p) else "" for p in pairs["p_holm"]],
        }
    )


def resamples_for_holm(family: int, bootstrap: int) -> int:
    """Bootstrap resamples a Holm family of ``family`` comparisons needs.

    The smallest p a bootstrap of B resamples can give is 2 / (B + 1), and Holm multiplies the smallest p by
    the family size: with 2,000 resamples a family of more than 50 comparisons could never reach α = 0.05,
    whatever the data. Such a family gets ceil(4 · family / α) resamples (smallest Holm p ≈ α / 2).
    """
    if family * 2 / (bootstrap + 1) <= SIGNIFICANCE:
        return bootstrap
    return max(bootstrap, int(np.ceil(4 * family / SIGNIFICANCE)))


def summary_lines(
    heads: pd.DataFrame, declared: pd.DataFrame, checks: pd.DataFrame, health: pd.DataFrame, baseline: str
) -> list[str]:
    """Generated sentences: what the secondary numbers support and what they do not."""
    lines = []
    if not declared.empty:
        hits = declared[declared["p_holm"] < SIGNIFICANCE]
        lines.append(
            f"- Declared comparisons: {len(hits)} of {len(declared)} differ after Holm correction "
            f"(α = {SIGNIFICANCE})"
            + (": " + "; ".join(f"{r.a} − {r.b} on {r.task} · {r.protocol} · {r.subset}: "
                              f"Δ = {r.delta:+.3f}" for r in hits.itertuples()) if len(hits) else "")
            + "."
        )  # fmt: skip
    tested = heads[np.isfinite(heads["p_holm"])]
    if len(tested):
        better = tested[(tested["p_holm"] < SIGNIFICANCE) & (tested["delta"] > 0)]
        worse = tested[(tested["p_holm"] < SIGNIFICANCE) & (tested["delta"] < 0)]
        lines.append(
            f"- Against {baseline} (secondary, Holm over {len(tested)} headline comparisons): "
            f"{len(better)} better, {len(worse)} worse, {len(tested) - len(better) - len(worse)} without a "
            "shown difference. A comparison without a shown difference is not evidence of equality."
        )
    if not checks.empty:
        failing = checks[checks["verdict"].str.startswith("no better")]
        lines.append(
            f"- Baselines: {len(failing)} of {len(checks)} pre-trained results are no better than raw pixels "
            "(kNN / linear) or from-scratch training (fine-tune)"
            + (": " + ", ".join(sorted(set(f"{r.condition} ({r.task} · {r.protocol} · {r.data})"
                                          for r in failing.itertuples()))) if len(failing) else "")
            + "."
        )  # fmt: skip
    if not health.empty:
        bad = health[health["status"].isin(["collapsed", "plateau"])]
        if len(bad):
            lines.append(
                f"- **{len(bad)} of {len(health)} pre-training runs collapsed or never left the loss plateau** "
                f"({', '.join(bad['run'])}): their rows measure an untrained encoder, not the method."
            )
    overlap = heads[heads["overlap"].fillna(0) > 0]
    if len(overlap):
        lines.append(
            f"- **Test patients were seen in pre-training** (--allow-overlap) for "
            f"{', '.join(sorted(set(overlap['name'])))}: those results overstate transfer."
        )
    unconverged = heads[heads["not_converged"] > 0]
    if len(unconverged):
        lines.append(
            f"- Fine-tuning not converged (best validation step = last step) for "
            f"{', '.join(sorted(set(unconverged['name'])))}: a longer budget may change those numbers."
        )
    return lines


def _scaling_section(spec: ExperimentSpec, out: Path, rows: pd.DataFrame, heads: pd.DataFrame) -> list[str]:
    """Metric vs pre-training images for a ``grid`` study (F's ``scaling.plot_scaling``), in the endpoint's
    cell when one is declared, else the first headline cell."""
    if not spec.grid or heads.empty:
        return []
    from ssl_radiology.experiment.scaling import plot_scaling

    if spec.endpoint is not None:
        e = spec.endpoint
        cell = heads[
            (heads["task"] == e.target) & (heads["subset"] == findings.subset_label(e.fraction, e.shots))
        ]
        cell = cell[cell["protocol"] == findings.protocol_variant(e.protocol, set(cell["protocol"]))]
    else:
        cell = heads
    if cell.empty:
        return []
    protocol, task, subset, metric = (cell.iloc[0][c] for c in CELL)
    data = rows[(rows["protocol"] == protocol) & (rows["task"] == task) & (rows["subset"] == subset)]
    data = data[data["metric"] == metric]
    runs = {r.name: r for r in spec.pretrain}
    points = []
    for point in spec.grid:
        for seed in runs[point.init].seeds:
            values = data[(data["name"] == point.init) & (data["unit"] == f"run{seed}")]["value"]
            n_images = read_n_images(run_dir(out, runs[point.init], seed))
            if len(values) and n_images:
                points.append({"domain": point.domain, "model": point.backbone, "n_images": n_images,
                               "metric": float(values.mean()), "replicate": seed})  # fmt: skip
    if not points:
        return []
    path = out / "report" / "scaling.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fits = plot_scaling(
            pd.DataFrame(points), path, metric_label=f"{task} · {protocol} · {subset} · {metric}"
        )
    except UserError as exc:
        return ["## Scaling\n", f"No scaling fit: {exc}\n"]
    lines = ["## Scaling\n", f"{metric} on {task} ({protocol}, {subset}) against pre-training images:\n"]
    for label, fit in fits.items():
        lines.append(
            f"- {label}: exponent {fit['exponent']:+.3f} (95 % CI [{fit['ci_low']:+.3f}, {fit['ci_high']:+.3f}]), "
            f"{int(fit['n_points'])} runs at {int(fit['n_sizes'])} sizes"
        )
    lines.append(f"\n![scaling]({os.path.relpath(path, out)})\n")
    return lines


def _analysis_section(spec: ExperimentSpec, out: Path) -> list[str]:
    lines: list[str] = []
    for cell in expand_cells(spec, out):
        if cell.stage != "analyze" or not (cell.out / DONE_FILE).is_file():
            continue
        lines.append(f"### {cell.id.split('/', 1)[1]}")
        for js in sorted(cell.out.glob("*.json")):
            if js.name == DONE_FILE:
                continue
            try:
                payload = json.loads(js.read_text())
            except (OSError, ValueError):
                continue
            caption = payload.get("caption") if isinstance(payload, dict) else None
            if caption:
                lines.append(f"{caption}\n")
        for png in sorted(cell.out.glob("*.png")):
            rel = os.path.relpath(png, out)
            lines.append(f"![{png.stem}]({rel})\n")
    return lines


def _cell_seconds(cells) -> list[dict]:
    """Seconds each finished cell took, from its ``cell.json`` (also for cells skipped in this run)."""
    records = []
    for cell in cells:
        try:
            seconds = float(json.loads((cell.out / DONE_FILE).read_text())["seconds"])
        except (OSError, ValueError, KeyError):
            continue
        records.append({"stage": cell.stage, "seconds": seconds})
    return records


def _results_sections(spec: ExperimentSpec, out: Path, rows: pd.DataFrame, bootstrap: int) -> list[str]:
    """Endpoint, summary, declared comparisons, health, baseline checks, secondary table, curves, scaling."""
    table = comparison_table(rows, spec.baseline, bootstrap)
    paths = write_outputs(table, out / "report")
    heads = headline(table)
    pretrained = {i.name for i in spec.inits if i.run is not None}
    parts: list[str] = []
    if spec.endpoint is not None:
        result = findings.endpoint_result(rows, spec.endpoint, bootstrap)
        in_cell = table[
            (table["task"] == spec.endpoint.target)
            & (table["protocol"] == result.protocol)
            & (table["subset"] == result.subset)
        ]
        parts.append("## Primary endpoint\n")
        parts += findings.endpoint_lines(result, _condition_flags(in_cell), pretrained)
        parts.append("")
    else:
        parts.append(
            "## Primary endpoint\n\nNone declared in the experiment file (`endpoint:`): every comparison "
            "below is exploratory.\n"
        )
    declared = findings.declared_table(rows, heads, spec, bootstrap) if spec.comparisons else pd.DataFrame()
    enough = resamples_for_holm(len(declared), bootstrap)
    if enough > bootstrap:  # too few resamples for this family: redo it with enough
        declared = findings.declared_table(rows, heads, spec, enough)
    checks = findings.baseline_checks(rows, heads, spec, bootstrap)
    health = findings.health_table(spec, out)
    parts.append("## What the numbers support (generated)\n")
    parts += summary_lines(heads, declared, checks, health, spec.baseline) or ["- No comparisons to report."]
    parts.append("")
    if not declared.empty:
        parts.append("## Declared comparisons (one family, Holm-corrected)\n")
        parts.append(to_markdown(_pair_frame(declared)))
        parts.append(
            f"\n{max(enough, bootstrap):,} paired bootstrap resamples (smallest attainable p "
            f"{2 / (max(enough, bootstrap) + 1):.2g}, × {len(declared)} under Holm).\n"
        )
    if not health.empty:
        parts.append("## Pre-training health\n")
        parts.append(to_markdown(health.fillna("")))
    if not checks.empty:
        parts.append("## Baselines: raw pixels (kNN / linear) and from-scratch (fine-tune)\n")
        shown = checks.assign(
            Δ=[f"{d:+.4f}" for d in checks["Δ"]],
            **{"95% CI": [f"[{lo:+.4f}, {hi:+.4f}]" if np.isfinite(lo) else ""
                          for lo, hi in zip(checks["low"], checks["high"], strict=True)]},
        ).drop(columns=["low", "high"])  # fmt: skip
        parts.append(to_markdown(shown))
    parts.append(f"## All conditions, headline metrics (secondary; Δ and Holm against {spec.baseline})\n")
    parts.append(to_markdown(display_frame(heads)))
    parts.append(
        "n runs × draws: independent replicates (pre-training runs; each redrawn random init; 1 for a fixed "
        "checkpoint) × evaluation seeds averaged within each. CI (runs, t): t-interval on replicate means. "
        "CI (patients): percentile bootstrap over test patients (and replicates).\n"
    )
    parts.append(f"![fraction curves]({os.path.relpath(paths['png'], out)})\n")
    parts.append(
        f"All metrics (accuracy, balanced accuracy, AUROC, ECE, ...): "
        f"[`{os.path.relpath(paths['md'], out)}`]({os.path.relpath(paths['md'], out)}), "
        f"raw numbers in `{os.path.relpath(paths['csv'], out)}`.\n"
    )
    parts += _scaling_section(spec, out, rows, heads)
    return parts


def write_report(
    spec: ExperimentSpec, out: Path, outcomes: Sequence[Any], bootstrap: int = N_BOOTSTRAP
) -> Path:
    """Write ``out/report.md`` (and ``out/report/comparison.{csv,md,png}``) from what exists on disk.

    ``outcomes`` are this invocation's cell outcomes (``state``, ``cell.id``, ``error``)."""
    cells = expand_cells(spec, out)
    eval_dirs = [c.out for c in cells if c.stage == "eval" and (c.out / "results.csv").is_file()]
    replicates = ", ".join(f"{r.name} × {len(r.seeds)}" for r in spec.pretrain) or "none"
    parts = [
        f"# {spec.name}: transfer study report\n",
        f"Experiment file: `{spec.source}`. Pre-training replicates: {replicates}. Evaluation seeds per "
        f"replicate: {', '.join(map(str, spec.seeds))}. Backbone: `{spec.backbone}` at {spec.image_size} px.\n",
    ]

    timings = pd.DataFrame(_cell_seconds(cells))
    if not timings.empty:
        per_stage = timings.groupby("stage", sort=False)["seconds"].sum()
        parts.append(
            "Compute time of the cells (summed over runs, resumed ones included): "
            + ", ".join(f"{stage} {sec / 60:.1f} min" for stage, sec in per_stage.items())
            + f"; total {timings['seconds'].sum() / 60:.1f} min.\n"
        )

    if eval_dirs:
        try:
            rows = gather(eval_dirs)
        except UserError as exc:
            rows = None
            parts.append(f"Results could not be combined: {exc}\n")
        if rows is not None:
            parts += _results_sections(spec, out, rows, bootstrap)
    else:
        parts.append("No evaluation results yet.\n")

    analysis = _analysis_section(spec, out)
    if analysis:
        parts.append("## Feature space\n")
        parts += analysis

    unfinished = [o for o in outcomes if o.state in ("failed", "blocked")]
    if unfinished:
        parts.append("## Unfinished cells\n")
        parts += [f"- `{o.cell.id}`: {o.state} — {o.error}" for o in unfinished]
        parts.append("\nRun the same command again to retry them; finished cells are kept.\n")

    path = out / "report.md"
    tmp = path.with_name("report.md.tmp")
    tmp.write_text("\n".join(parts) + "\n")
    os.replace(tmp, path)
    return path
