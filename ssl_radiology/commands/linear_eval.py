"""``ssl-rad linear-eval``: linear heads on frozen, cached features (SGD head and/or logistic regression)."""

from __future__ import annotations

import argparse

import numpy as np

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.linear import logistic_regression, sgd_linear
from ssl_radiology.evaluation.runner import SeedContext, add_eval_arguments, run_evaluation

METHODS = ("sgd", "logreg")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser)
    parser.add_argument(
        "--method", default=None, choices=[*METHODS, "both"], help="default: method in config"
    )


def _rows(ctx: SeedContext, features: np.ndarray, rows: np.ndarray):
    mask = None if ctx.task.label_mask is None else ctx.task.label_mask[rows]
    return features[rows], ctx.task.labels[rows], mask


def _linear(methods: list[str]):
    def protocol(ctx: SeedContext) -> dict[str, np.ndarray]:
        features = ctx.features()
        train, val, refit = (_rows(ctx, features, r) for r in (ctx.train, ctx.val, ctx.fit_rows))
        query, kind, n = features[ctx.query], ctx.task.kind, len(ctx.task.class_names)
        out = {}
        if "sgd" in methods:
            s = ctx.cfg.sgd
            out["linear-sgd"], ctx.extras["linear-sgd"] = sgd_linear(
                train, val, query, kind, n, base_lrs=list(s.base_lrs), epochs=int(s.epochs),
                batch_size=int(s.batch_size), batchnorm=bool(s.batchnorm), seed=ctx.seed,
            )  # fmt: skip
        if "logreg" in methods:
            out["linear-logreg"], ctx.extras["linear-logreg"] = logistic_regression(
                train, val, refit, query, kind, n, cs=list(ctx.cfg.logreg.cs), seed=ctx.seed
            )
        return out

    return protocol


def run(args: argparse.Namespace) -> int:
    from ssl_radiology.config import apply_overrides, load_group

    method = args.method or str(apply_overrides(load_group("eval", "linear"), args.overrides).method)
    if method not in (*METHODS, "both"):
        raise UserError(f"linear method '{method}' unknown; use sgd, logreg or both")
    methods = list(METHODS) if method == "both" else [method]
    return run_evaluation(args, f"linear-{method}", "linear", _linear(methods))
