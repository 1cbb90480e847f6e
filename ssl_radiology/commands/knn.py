"""``ssl-rad knn``: weighted kNN (DINO protocol) on frozen features, per seed, resumable."""

from __future__ import annotations

import argparse

from ssl_radiology.commands.eval_options import add_eval_arguments, eval_request


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ssl_radiology.api import evaluate

    evaluate(eval_request(args, "knn"))
    return 0
