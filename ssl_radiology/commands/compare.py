"""``ssl-rad compare``: mean ± sd over pre-training runs, CIs, Δ and tests against a baseline and for
declared pairs; table + plot."""

from __future__ import annotations

import argparse

from ssl_radiology.api.types import CompareRequest
from ssl_radiology.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", help="result folders (--out of knn / linear-eval / finetune)")
    parser.add_argument("--baseline", default=None, help="condition name to compare against")
    parser.add_argument("--out", default="comparison", help="folder for comparison.{md,csv,png}")
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma list of metrics to keep (default: all, e.g. accuracy,auroc_mean)",
    )
    parser.add_argument(
        "--pair",
        action="append",
        default=[],
        metavar="A,B",
        help="declared paired comparison A − B (repeat; one Holm family) -> pairs.{md,csv}",
    )
    parser.add_argument("--bootstrap", type=int, default=2000, help="patient-level bootstrap resamples")


def parse_pairs(values: list[str]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        names = [v.strip() for v in value.split(",")]
        if len(names) != 2 or not all(names):
            raise UserError(f"--pair {value}: expected two condition names, A,B")
        pairs.append((names[0], names[1]))
    return tuple(pairs)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ssl_radiology.api import compare
    from ssl_radiology.evaluation.compare import display_frame

    metrics = tuple(m.strip() for m in args.metrics.split(",")) if args.metrics else ()
    request = CompareRequest(
        tuple(args.results), args.out, args.baseline, metrics, parse_pairs(args.pair), args.bootstrap
    )
    result = compare(request)
    frame = display_frame(result["table"])
    view = Table(title=f"baseline: {args.baseline}" if args.baseline else "no baseline")
    for column in frame.columns:
        view.add_column(column, overflow="fold")
    for record in frame.itertuples(index=False):
        view.add_row(*map(str, record))
    Console().print(view)
    print("wrote " + ", ".join(str(p) for p in result["paths"].values()))
    return 0
