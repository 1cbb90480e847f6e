"""``ssl-rad linear-eval``: linear heads on frozen, cached features (SGD head and/or logistic regression)."""

from __future__ import annotations

import argparse

from ssl_radiology.api.types import LINEAR_HEADS
from ssl_radiology.commands.eval_options import add_eval_arguments, eval_request


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser)
    parser.add_argument(
        "--head",
        default=None,
        choices=LINEAR_HEADS,
        help="linear head (default: 'head' in configs/eval/linear.yaml)",
    )


def run(args: argparse.Namespace) -> int:
    from ssl_radiology.api import evaluate

    evaluate(eval_request(args, "linear", args.head))
    return 0
