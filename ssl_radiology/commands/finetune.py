"""``ssl-rad finetune``: full fine-tuning per seed with early stopping on a validation split, resumable."""

from __future__ import annotations

import argparse

import numpy as np

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.finetune import FinetuneConfig, finetune
from ssl_radiology.evaluation.runner import SeedContext, add_eval_arguments, run_evaluation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser)


def _finetune(ctx: SeedContext) -> dict[str, np.ndarray]:
    settings = dict(ctx.cfg.finetune)
    try:
        cfg = FinetuneConfig(
            **{**settings, "crop_scale": tuple(settings.get("crop_scale", (0.7, 1.0)))},
            batch_size=int(ctx.cfg.batch_size),
            workers=int(ctx.cfg.workers),
        )
    except TypeError as exc:
        raise UserError(f"finetune settings: {exc}") from exc
    task = ctx.task
    probs, ctx.extras["finetune"] = finetune(
        ctx.load_backbone(), task.dataset, task.labels, task.label_mask, task.kind, len(task.class_names),
        ctx.train, ctx.val, ctx.query, image_size=ctx.image_size, window=ctx.window, cfg=cfg, seed=ctx.seed,
        device=ctx.device,
    )  # fmt: skip
    return {"finetune": probs}


def run(args: argparse.Namespace) -> int:
    return run_evaluation(args, "finetune", "finetune", _finetune)
