"""The comparison table and plot: does a pre-trained checkpoint beat the baseline, and by how much?

One row per condition (name × protocol × task × fraction/shots × metric): mean ± sample std over seeds, the
number of seeds, a 95 % t-interval, and against the baseline condition of the same protocol/task/subset/metric
the difference (absolute and relative) and Welch's t-test p-value.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.results import load_results
from ssl_radiology.evaluation.stats import summarize, welch_p

CELL = ["protocol", "task", "subset", "metric"]
PLOT_METRICS = ("accuracy", "auroc_mean")


def gather(paths: list[str | os.PathLike[str]]) -> pd.DataFrame:
    """Concatenate result folders; refuse one name carrying two checkpoint hashes."""
    frames = [load_results(p) for p in paths]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if rows.empty:
        raise UserError(f"no results found in {', '.join(map(str, paths))}")
    for name, group in rows.groupby("name"):
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
    return rows


def comparison_table(rows: pd.DataFrame, baseline: str | None) -> pd.DataFrame:
    """Summaries per condition, with Δ / Δ% / Welch p against ``baseline`` where it has the same cell."""
    if baseline is not None and baseline not in set(rows["name"]):
        raise UserError(
            f"baseline '{baseline}' not among the conditions: {', '.join(sorted(set(rows['name'])))}"
        )
    keys = ["name", *CELL]
    groups = dict(list(rows.groupby(keys, sort=True)))
    values = {k: g["value"].to_numpy() for k, g in groups.items()}
    out = []
    for key, vals in values.items():
        s = summarize(vals)
        record = dict(zip(keys, key, strict=True))
        record.update(fraction=groups[key]["fraction"].iloc[0], shots=groups[key]["shots"].iloc[0])
        record.update(mean=s.mean, std=s.std, n=s.n, ci_low=s.ci_low, ci_high=s.ci_high)
        base = values.get((baseline, *key[1:])) if baseline is not None else None
        if base is not None and key[0] != baseline:
            b = summarize(base).mean
            record.update(delta=s.mean - b, delta_pct=100 * (s.mean - b) / abs(b) if b else np.nan)
            record["p_welch"] = welch_p(vals, base)
        else:
            record.update(delta=np.nan, delta_pct=np.nan, p_welch=np.nan)
        out.append(record)
    return pd.DataFrame(out)


def _fmt(x: float, digits: int = 4) -> str:
    return "" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


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
            "mean ± std": [
                f"{_fmt(m)} ± {_fmt(s)}" for m, s in zip(table["mean"], table["std"], strict=True)
            ],
            "n": table["n"].astype(int).astype(str),
            "95% CI": [
                f"[{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(lo) else ""
                for lo, hi in zip(table["ci_low"], table["ci_high"], strict=True)
            ],
            "Δ": [_fmt(d) for d in table["delta"]],
            "Δ%": [_fmt(d, 2) for d in table["delta_pct"]],
            "p (Welch)": [_fmt(p) for p in table["p_welch"]],
        }
    )


def to_markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


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
                    yerr=part["std"].fillna(0),
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


def write_outputs(table: pd.DataFrame, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """``comparison.csv`` (raw numbers), ``comparison.md`` (formatted) and ``comparison.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "comparison.csv", "md": out / "comparison.md", "png": out / "comparison.png"}
    table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(to_markdown(display_frame(table)))
    plot(table, paths["png"])
    return paths
