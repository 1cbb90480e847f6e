"""``ssl-rad knn``: weighted kNN (DINO protocol) on frozen features, per seed, resumable."""

from __future__ import annotations

import argparse

import numpy as np

from ssl_radiology.evaluation.knn import knn_probabilities
from ssl_radiology.evaluation.runner import SeedContext, add_eval_arguments, run_evaluation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser)


def _knn(ctx: SeedContext) -> dict[str, np.ndarray]:
    features = ctx.features()
    bank = ctx.fit_rows
    threads = ctx.cfg.get("threads")
    scores = knn_probabilities(
        features[bank],
        ctx.task.labels[bank],
        features[ctx.query],
        ctx.task.kind,
        len(ctx.task.class_names),
        ks=[int(k) for k in ctx.cfg.ks],
        temperature=float(ctx.cfg.temperature),
        num_threads=None if threads is None else int(threads),
    )
    return {f"knn-k{k}": probs for k, probs in scores.items()}


def run(args: argparse.Namespace) -> int:
    return run_evaluation(args, "knn", "knn", _knn)
