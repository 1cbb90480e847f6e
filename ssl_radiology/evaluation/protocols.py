"""The three evaluation protocols as functions of one seed's :class:`~.runner.SeedContext`.

Each returns ``{protocol variant: (n_query, n_classes) scores}`` (``knn-k20``, ``linear-logreg``,
``finetune``) and may add per-variant extras (chosen lr / C, best epoch) to ``ctx.extras``. They lived in the
command modules before; here the Python API, the commands and the experiment cells share them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ssl_radiology.errors import UserError

if TYPE_CHECKING:
    from ssl_radiology.evaluation.runner import SeedContext

Protocol = Callable[["SeedContext"], dict[str, np.ndarray]]
LINEAR_HEADS = ("sgd", "logreg")


def knn(ctx: SeedContext) -> dict[str, np.ndarray]:
    """Weighted kNN (DINO protocol) on frozen features; the bank is the fit rows of this seed."""
    from ssl_radiology.features.knn import knn_probabilities

    features = ctx.features()
    bank = ctx.fit_rows
    threads = ctx.cfg.threads
    scores = knn_probabilities(
        features[bank],
        ctx.task.labels[bank],
        features[ctx.query],
        ctx.task.kind,
        len(ctx.task.class_names),
        ks=[int(k) for k in ctx.cfg.ks],
        temperature=float(ctx.cfg.temperature),
        num_threads=None if threads is None else int(threads),
        train_mask=None if ctx.task.label_mask is None else ctx.task.label_mask[bank],
    )
    return {f"knn-k{k}": probs for k, probs in scores.items()}


def _rows(ctx: SeedContext, features: np.ndarray, rows: np.ndarray):
    mask = None if ctx.task.label_mask is None else ctx.task.label_mask[rows]
    return features[rows], ctx.task.labels[rows], mask


def linear(heads: list[str]) -> Protocol:
    """Linear heads on cached features: an SGD head (lr chosen on validation) and/or a logistic sweep over C."""

    def protocol(ctx: SeedContext) -> dict[str, np.ndarray]:
        from ssl_radiology.evaluation.linear import logistic_regression, sgd_linear

        features = ctx.features()
        train, val, refit = (_rows(ctx, features, r) for r in (ctx.train, ctx.val, ctx.fit_rows))
        query, kind, n = features[ctx.query], ctx.task.kind, len(ctx.task.class_names)
        out = {}
        if "sgd" in heads:
            s = ctx.cfg.sgd
            out["linear-sgd"], ctx.extras["linear-sgd"] = sgd_linear(
                train, val, query, kind, n, base_lrs=list(s.base_lrs), epochs=int(s.epochs),
                batch_size=int(s.batch_size), batchnorm=bool(s.batchnorm), seed=ctx.seed,
            )  # fmt: skip
        if "logreg" in heads:
            out["linear-logreg"], ctx.extras["linear-logreg"] = logistic_regression(
                train, val, refit, query, kind, n, cs=list(ctx.cfg.logreg.cs), seed=ctx.seed
            )
        return out

    return protocol


def finetune(ctx: SeedContext) -> dict[str, np.ndarray]:
    """Full fine-tuning with early stopping on the validation rows; settings from ``cfg.finetune``."""
    from omegaconf import OmegaConf

    from ssl_radiology.evaluation.finetune import FinetuneConfig
    from ssl_radiology.evaluation.finetune import finetune as run_finetune

    settings = OmegaConf.to_container(ctx.cfg.finetune, resolve=True)
    assert isinstance(settings, dict)
    if "crop_scale" in settings:
        settings["crop_scale"] = tuple(settings["crop_scale"])
    try:
        cfg = FinetuneConfig(**settings, batch_size=int(ctx.cfg.batch_size), workers=int(ctx.cfg.workers))
    except TypeError as exc:
        raise UserError(f"finetune settings: {exc}") from exc
    task = ctx.task
    probs, ctx.extras["finetune"] = run_finetune(
        ctx.load_backbone(), task.dataset, task.labels, task.label_mask, task.kind, len(task.class_names),
        ctx.train, ctx.val, ctx.query, image_size=ctx.image_size, window=ctx.window, cfg=cfg, seed=ctx.seed,
        device=ctx.device,
    )  # fmt: skip
    return {"finetune": probs}


def select(protocol: str, head: str) -> tuple[str, Protocol]:
    """``(result family, protocol function)`` of a request's protocol (and linear head)."""
    if protocol == "knn":
        return "knn", knn
    if protocol == "finetune":
        return "finetune", finetune
    if head not in (*LINEAR_HEADS, "both"):
        raise UserError(f"linear head '{head}' unknown; use sgd, logreg or both")
    return f"linear-{head}", linear(list(LINEAR_HEADS) if head == "both" else [head])
