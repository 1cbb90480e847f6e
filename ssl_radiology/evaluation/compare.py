"""The comparison table and plot: does a pre-trained checkpoint beat the baseline, and by how much?

One row per condition (name × protocol × task × fraction/shots × metric). The unit of replication is the
independent replicate (a pre-training run; each redrawn ``random`` initialisation; a fixed checkpoint is one
unit), with its evaluation seeds averaged first (``stats``):

- ``mean``, ``std``, ``n`` (units), ``n_draws`` (evaluation seeds per unit), ``ci_low``/``ci_high``: mean ±
  sample sd across unit means and the 95 % t-interval on them (NaN with one unit: no spread to estimate);
- ``boot_low``/``boot_high``: 95 % percentile interval from a bootstrap over test *patients* (and units);
- against the baseline in the same cell: ``delta`` (and ``delta_pct``), its paired patient-bootstrap interval
  ``delta_low``/``delta_high`` and two-sided ``p_boot``, Holm-adjusted over every baseline comparison of the
  same metric in the table (``p_holm``); Welch's t-test on unit means (``p_welch``) only where both sides
  have ≥ 2 units with non-zero variance, otherwise ``test_note`` says why there is no test;
- provenance: the worst pre-training ``health`` among the units, the largest patient ``overlap`` with
  pre-training, and how many fine-tune seeds ended at their last validation step (``not_converged``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.paired import (
    PredictionCache,
    add_units,
    compare_pair,
    condition_ci,
    worst_health,
)
from ssl_radiology.evaluation.results import load_results
from ssl_radiology.evaluation.stats import holm, no_test_reason, summarize, welch_p

CELL = ["protocol", "task", "subset", "metric"]
PLOT_METRICS = ("accuracy", "auroc_mean")
#: bootstrap replicates by default (percentile intervals need a few thousand for stable 2.5 % tails)
N_BOOTSTRAP = 2000


def gather(paths: list[str | os.PathLike[str]]) -> pd.DataFrame:
    """Concatenate result folders; refuse one replicate of a name carrying two checkpoint hashes."""
    frames = [load_results(p) for p in paths]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if rows.empty:
        raise UserError(f"no results found in {', '.join(map(str, paths))}")
    replicate = rows["pretrain_seed"].astype(float).fillna(-1)
    for (name, _), group in rows.groupby([rows["name"], replicate]):
        hashes = group.drop_duplicates("checkpoint_hash")
        if len(hashes) > 1:
            where = "; ".join(
                f"{r.checkpoint_hash} ({r.checkpoint}, {r.source})" for r in hashes.itertuples()
            )
            raise UserError(f"condition '{name}' mixes results of different checkpoints: {where}")
    for column in ("fraction", "shots"):
        rows[column] = rows[column].astype(float)
    rows["subset"] = [
        f"{int(s)}-shot" if np.isfinite(s) else f"{f:g}"
        for f, s in zip(rows["fraction"], rows["shots"], strict=True)
    ]
    return add_units(rows)


def _provenance(group: pd.DataFrame) -> dict:
    overlap = pd.to_numeric(group["overlap"], errors="coerce")
    converged = group["converged"].dropna().astype(str).str.lower()
    return {
        "health": worst_health(group["health"]),
        "overlap": float(overlap.max()) if overlap.notna().any() else np.nan,
        "not_converged": int(converged.isin(["false", "0", "0.0"]).sum()),
    }


def comparison_table(
    rows: pd.DataFrame, baseline: str | None, bootstrap: int = N_BOOTSTRAP, seed: int = 0
) -> pd.DataFrame:
    """Summaries per condition, with Δ, paired bootstrap and tests against ``baseline`` in the same cell."""
    if baseline is not None and baseline not in set(rows["name"]):
        raise UserError(
            f"baseline '{baseline}' not among the conditions: {', '.join(sorted(set(rows['name'])))}"
        )
    keys = ["name", *CELL]
    groups = dict(list(rows.groupby(keys, sort=True)))
    cache = PredictionCache()
    out = []
    for key, group in groups.items():
        means = group.groupby("unit", sort=True)["value"].mean()
        s = summarize(means.to_numpy())
        record = dict(zip(keys, key, strict=True))
        record.update(fraction=group["fraction"].iloc[0], shots=group["shots"].iloc[0])
        record.update(mean=s.mean, std=s.std, n=s.n, n_draws=len(group) / max(1, len(means)))
        record.update(ci_low=s.ci_low, ci_high=s.ci_high)
        interval = condition_ci(group, key[-1], cache, bootstrap, seed)
        record.update(
            boot_low=interval.low if interval else np.nan, boot_high=interval.high if interval else np.nan
        )
        record.update(_provenance(group))
        base = groups.get((baseline, *key[1:])) if baseline is not None else None
        record.update(delta=np.nan, delta_pct=np.nan, delta_low=np.nan, delta_high=np.nan, p_boot=np.nan)
        record.update(p_welch=np.nan, test_note="")
        if base is not None and key[0] != baseline:
            base_means = base.groupby("unit", sort=True)["value"].mean().to_numpy()
            b = float(np.mean(base_means))
            record.update(delta=s.mean - b, delta_pct=100 * (s.mean - b) / abs(b) if b else np.nan)
            record["p_welch"] = welch_p(means.to_numpy(), base_means)
            record["test_note"] = no_test_reason(means.to_numpy(), base_means) or ""
            pair = compare_pair(group, base, key[-1], cache, bootstrap, seed)
            if pair is not None:
                record.update(delta_low=pair.low, delta_high=pair.high, p_boot=pair.p)
        out.append(record)
    table = pd.DataFrame(out)
    table["p_holm"] = np.nan
    for _, family in table.groupby("metric"):
        table.loc[family.index, "p_holm"] = holm(family["p_boot"].to_numpy())
    return table


def pair_table(
    rows: pd.DataFrame,
    pairs: list[tuple[str, str]] | tuple[tuple[str, str], ...],
    bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> pd.DataFrame:
    """Declared paired comparisons a − b in every cell where both were evaluated, one Holm family.

    Columns: a, b, protocol, task, subset, metric, mean_a, mean_b, n_a, n_b (replicate units), delta,
    delta_low, delta_high, p_boot (paired patient bootstrap), p_holm (Holm over all rows of this table).
    """
    cache = PredictionCache()
    groups = dict(list(rows.groupby(["name", *CELL], sort=True)))
    out = []
    for a, b in pairs:
        for key, group_a in groups.items():
            if key[0] != a or (b, *key[1:]) not in groups:
                continue
            group_b = groups[(b, *key[1:])]
            means_a = group_a.groupby("unit")["value"].mean()
            means_b = group_b.groupby("unit")["value"].mean()
            record = dict(zip(CELL, key[1:], strict=True))
            record.update(a=a, b=b, mean_a=means_a.mean(), mean_b=means_b.mean())
            record.update(n_a=len(means_a), n_b=len(means_b), delta=means_a.mean() - means_b.mean())
            pair = compare_pair(group_a, group_b, key[-1], cache, bootstrap, seed)
            record.update(
                delta_low=pair.low if pair else np.nan,
                delta_high=pair.high if pair else np.nan,
                p_boot=pair.p if pair else np.nan,
            )
            out.append(record)
    columns = [
        "a",
        "b",
        *CELL,
        "mean_a",
        "mean_b",
        "n_a",
        "n_b",
        "delta",
        "delta_low",
        "delta_high",
        "p_boot",
    ]
    table = pd.DataFrame(out, columns=columns)
    table["p_holm"] = holm(table["p_boot"].to_numpy())
    return table


def _fmt(x: float, digits: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _interval(lo: float, hi: float) -> str:
    return f"[{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(lo) else ""


def flags(record: pd.Series) -> str:
    """Warnings a reader must see next to a number: failed pre-training, leakage, unconverged fine-tuning."""
    out = []
    if record.get("health") in ("collapsed", "plateau"):
        out.append(f"pre-training {record['health']}")
    if np.isfinite(record.get("overlap", np.nan)) and record["overlap"] > 0:
        out.append(f"{int(record['overlap'])} test patients seen in pre-training")
    if record.get("not_converged", 0):
        out.append(f"not converged ({int(record['not_converged'])} seeds)")
    return "; ".join(out)


def display_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Human-readable strings for the Markdown / terminal table."""
    subset = [
        f"{int(s)}-shot" if np.isfinite(s) else f"{f:g}"
        for f, s in zip(table["fraction"], table["shots"], strict=True)
    ]
    return pd.DataFrame(
        {
            "condition": table["name"],
            "protocol": table["protocol"],
            "task": table["task"],
            "data": subset,
            "metric": table["metric"],
            "mean ± sd": [
                f"{_fmt(m)} ± {_fmt(s)}" if np.isfinite(s) else _fmt(m)
                for m, s in zip(table["mean"], table["std"], strict=True)
            ],
            "n runs × draws": [f"{n} × {d:g}" for n, d in zip(table["n"], table["n_draws"], strict=True)],
            "95% CI (runs, t)": [
                _interval(lo, hi) for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)
            ],
            "95% CI (patients)": [
                _interval(lo, hi) for lo, hi in zip(table["boot_low"], table["boot_high"], strict=True)
            ],
            "Δ": [_fmt(d) for d in table["delta"]],
            "Δ 95% CI": [
                _interval(lo, hi) for lo, hi in zip(table["delta_low"], table["delta_high"], strict=True)
            ],
            "p (paired)": [_fmt(p) for p in table["p_boot"]],
            "p (Holm)": [_fmt(p) for p in table["p_holm"]],
            "Welch on runs": [
                _fmt(p) if np.isfinite(p) else note
                for p, note in zip(table["p_welch"], table["test_note"], strict=True)
            ],
            "flags": [flags(r) for _, r in table.iterrows()],
        }
    )


def to_markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _error_bars(part: pd.DataFrame) -> np.ndarray:
    """Patient-bootstrap interval where there is one (also for a single fixed checkpoint), else ± sd."""
    sd = part["std"].fillna(0).to_numpy()
    low = np.where(np.isfinite(part["boot_low"]), part["mean"] - part["boot_low"], sd)
    high = np.where(np.isfinite(part["boot_high"]), part["boot_high"] - part["mean"], sd)
    return np.clip(np.stack([low, high]), 0, None)


def plot(table: pd.DataFrame, path: Path) -> Path:
    """Headline metric against fraction (or shots) per condition, one panel per protocol × task × metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = table[table["metric"].isin(PLOT_METRICS)]
    panels = list(data.groupby(["protocol", "task", "metric"], sort=True))
    n = max(1, len(panels))
    cols = min(3, n)
    fig, axes = plt.subplots(
        (n + cols - 1) // cols, cols, figsize=(4.5 * cols, 3.4 * ((n + cols - 1) // cols))
    )
    axes = np.atleast_1d(axes).ravel()
    for ax, ((protocol, task, metric), panel) in zip(axes, panels, strict=False):
        for name, line in panel.groupby("name"):
            shots = line["shots"].notna()
            for part, label, x_col in ((line[~shots], "", "fraction"), (line[shots], " (shots)", "shots")):
                if part.empty:
                    continue
                part = part.sort_values(x_col)
                ax.errorbar(
                    part[x_col],
                    part["mean"],
                    yerr=_error_bars(part),
                    marker="o",
                    capsize=3,
                    label=f"{name}{label}",
                )
        ax.set_xscale("log")
        ax.set_xlabel("fraction of training data / shots per class")
        ax.set_ylabel(metric)
        ax.set_title(f"{task} · {protocol}", fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(
    table: pd.DataFrame, out_dir: str | os.PathLike[str], pairs: pd.DataFrame | None = None
) -> dict[str, Path]:
    """``comparison.csv`` (raw numbers), ``comparison.md`` (formatted) and ``comparison.png``; with declared
    ``pairs`` (from :func:`pair_table`) also ``pairs.csv`` and ``pairs.md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "comparison.csv", "md": out / "comparison.md", "png": out / "comparison.png"}
    table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(to_markdown(display_frame(table)))
    plot(table, paths["png"])
    if pairs is not None:
        paths["pairs_csv"], paths["pairs_md"] = out / "pairs.csv", out / "pairs.md"
        pairs.to_csv(paths["pairs_csv"], index=False)
        paths["pairs_md"].write_text(to_markdown(pairs.round(4)))
    return paths
