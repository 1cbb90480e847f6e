"""``report.md``: the comparison tables, curves, feature-space figures and a summary computed from numbers.

Nothing in the report is written by hand: every sentence of the summary is generated from the comparison
table (winner by mean of the headline metric, Welch's t-test against the runner-up and against the baseline),
so a report can never claim more than its numbers show.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.compare import (
    comparison_table,
    display_frame,
    gather,
    to_markdown,
    write_outputs,
)
from ssl_radiology.evaluation.stats import welch_p
from ssl_radiology.experiment.cells import DONE_FILE, expand_cells
from ssl_radiology.experiment.runner import Outcome
from ssl_radiology.experiment.spec import ExperimentSpec

#: the metric a study is judged by, per task kind, in order of preference
HEADLINE_METRICS = ("accuracy", "auroc_mean")
#: the protocol variants the summary reports (the full table keeps every k and both linear heads)
HEADLINE_PROTOCOLS = ("knn-k20", "linear-logreg", "finetune")
SIGNIFICANCE = 0.05


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of the first headline metric each headline (protocol, task, subset) reports."""
    if table["protocol"].isin(HEADLINE_PROTOCOLS).any():
        table = table[table["protocol"].isin(HEADLINE_PROTOCOLS)]
    keep = []
    for _, cell in table.groupby(["protocol", "task", "subset"], sort=True):
        metric = next((m for m in HEADLINE_METRICS if m in set(cell["metric"])), None)
        if metric is not None:
            keep.append(cell[cell["metric"] == metric])
    return pd.concat(keep, ignore_index=True) if keep else table.iloc[0:0]


def _subset_words(subset: str) -> str:
    if subset.endswith("-shot"):
        return subset
    fraction = float(subset)
    return f"{fraction * 100:g} % of the training data"


def _p_words(p: float) -> str:
    if math.isnan(p):
        return "no test: fewer than 2 seeds, or no condition varies across seeds"
    verdict = "significant" if p < SIGNIFICANCE else "not significant"
    return f"Welch p = {p:.3g}, {verdict}"


def summary_lines(rows: pd.DataFrame, table: pd.DataFrame, baseline: str) -> list[str]:
    """One generated sentence per (task, protocol, subset): who won, by how much, and is it significant."""
    lines = []
    heads = headline(table)
    for (task, protocol, subset), cell in heads.groupby(["task", "protocol", "subset"], sort=True):
        ranked = cell.sort_values("mean", ascending=False)
        best = ranked.iloc[0]
        metric = best["metric"]
        text = (
            f"**{task} · {protocol} · {_subset_words(subset)}** ({metric}): **{best['name']}** leads with "
            f"{best['mean']:.3f} ± {best['std']:.3f}"
        )
        if len(ranked) > 1:
            second = ranked.iloc[1]
            values = rows[
                (rows["task"] == task) & (rows["protocol"] == protocol) & (rows["subset"] == subset)
            ]
            values = values[values["metric"] == metric]
            a = values[values["name"] == best["name"]]["value"].to_numpy()
            b = values[values["name"] == second["name"]]["value"].to_numpy()
            text += (
                f"; runner-up {second['name']} {second['mean']:.3f} ± {second['std']:.3f} "
                f"({_p_words(welch_p(a, b))})"
            )
        base = cell[cell["name"] == baseline]
        if best["name"] != baseline and not base.empty:
            text += f"; vs {baseline}: Δ = {best['delta']:+.3f} ({best['delta_pct']:+.1f} %)"
        lines.append(f"- {text}.")
    return lines


def scoreboard(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per condition: in how many cells it won, and how often it beat / lost to the baseline significantly."""
    heads = headline(table)
    records = []
    for name, group in heads.groupby("name", sort=True):
        wins = 0
        for _, cell in heads.groupby(["task", "protocol", "subset"]):
            if cell.sort_values("mean", ascending=False).iloc[0]["name"] == name:
                wins += int(name in set(cell["name"]))
        significant = group["p_welch"] < SIGNIFICANCE
        records.append(
            {
                "condition": name,
                "cells": len(group),
                "wins": wins,
                f"significantly better than {baseline}": int((significant & (group["delta"] > 0)).sum()),
                f"significantly worse than {baseline}": int((significant & (group["delta"] < 0)).sum()),
            }
        )
    return pd.DataFrame(records)


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


def write_report(spec: ExperimentSpec, out: Path, outcomes: Sequence[Outcome]) -> Path:
    """Write ``out/report.md`` (and ``out/report/comparison.{csv,md,png}``) from what exists on disk."""
    cells = expand_cells(spec, out)
    eval_dirs = [c.out for c in cells if c.stage == "eval" and (c.out / "results.csv").is_file()]
    parts = [
        f"# {spec.name}: transfer study report\n",
        f"Experiment file: `{spec.source}`. Seeds: "
        f"{', '.join(map(str, spec.seeds))}. Backbone: `{spec.backbone}` at {spec.image_size} px.\n",
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
            table = comparison_table(rows, spec.baseline)
            paths = write_outputs(table, out / "report")
            parts.append("## Summary (generated from the numbers)\n")
            parts += summary_lines(rows, table, spec.baseline)
            parts.append("")
            parts.append(to_markdown(scoreboard(table, spec.baseline)))
            parts.append("## Headline metrics\n")
            parts.append(to_markdown(display_frame(headline(table))))
            parts.append(f"![fraction curves]({os.path.relpath(paths['png'], out)})\n")
            parts.append(
                f"All metrics (accuracy, balanced accuracy, AUROC, ECE, ...): "
                f"[`{os.path.relpath(paths['md'], out)}`]({os.path.relpath(paths['md'], out)}), "
                f"raw numbers in `{os.path.relpath(paths['csv'], out)}`.\n"
            )
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
