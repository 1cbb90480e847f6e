"""``ssl-rad experiment CONFIG``: run a whole transfer study, resumably, and write ``report.md``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssl_radiology.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", help="experiment YAML: a path, or a name under configs/experiment/ (demo, domain_transfer)"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: experiments/<name>)")
    parser.add_argument(
        "--only", metavar="PATTERN", help="run only cells whose id matches (and what they need)"
    )
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their state; run nothing")
    parser.set_defaults(overrides=[])


def run(args: argparse.Namespace) -> int:
    from ssl_radiology.experiment import load_spec, run_experiment

    spec = load_spec(args.config, args.overrides)
    out = args.out or Path("experiments") / spec.name
    outcomes = run_experiment(spec, out, only=args.only, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    bad = [o for o in outcomes if o.state in ("failed", "blocked")]
    print(f"report: {out / 'report.md'}")
    if bad:
        lines = "\n".join(f"  {o.cell.id}: {o.error}" for o in bad)
        raise UserError(
            f"{len(bad)} cell(s) did not finish (run the same command again to retry them):\n{lines}"
        )
    return 0
