"""``ssl-rad compare``: mean ± std over seeds, 95 % CI, Δ and Welch's t-test against a baseline; table + plot."""

from __future__ import annotations

import argparse

from ssl_radiology.evaluation.compare import comparison_table, display_frame, gather, write_outputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="result folders (--out of knn / linear-eval / finetune)")
    parser.add_argument("--baseline", default=None, help="condition name to compare against")
    parser.add_argument("--out", default="comparison", help="folder for comparison.{md,csv,png}")
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma list of metrics to keep (default: all, e.g. accuracy,auroc_mean)",
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    rows = gather(args.results)
    if args.metrics:
        rows = rows[rows["metric"].isin([m.strip() for m in args.metrics.split(",")])]
    table = comparison_table(rows, args.baseline)
    frame = display_frame(table)
    view = Table(title=f"baseline: {args.baseline}" if args.baseline else "no baseline")
    for column in frame.columns:
        view.add_column(column, overflow="fold")
    for record in frame.itertuples(index=False):
        view.add_row(*map(str, record))
    Console().print(view)
    paths = write_outputs(table, args.out)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
