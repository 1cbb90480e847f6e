"""Pre-training throughput: ``ssl-rad pretrain``'s Lightning loop vs a bare PyTorch loop, and the data pipeline.

For each method the same module (timm backbone, lightly heads and loss, DeviceAugment) trains on the same
loader batches twice: once through ``build_trainer`` (Lightning, callbacks, per-step schedules, seeded step
RNG, interval logging to CSV, checkpoint-free) and once in a plain loop (augment → loss → backward → clip →
AdamW step → EMA for DINO). The two alternate for ``--rounds`` rounds (bare, framework, bare, ...) so that a
change in the machine's load hits both; the ratio framework/bare per round and its median are printed
(target ≥ 0.95), with the load average before and after. Rates are per CPU-second of this process
(``time.process_time``, the figure that other jobs on a shared machine do not distort when the run uses
one thread and no loader workers) and per wall second. A second figure is the loader-side DINO
multi-crop pipeline alone: views per second in one process (= per loader worker).

    .venv/bin/python scripts/bench/pretrain.py            # defaults: a few minutes on 2 busy CPU cores
    taskset -c 1 .venv/bin/python scripts/bench/pretrain.py --methods dino,simclr --batch-size 32 --threads 1

CPU figures on a shared machine are noisy (±10 %): compare ratios from the same run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightly.models.utils import update_momentum

from ssl_radiology.data import open_source, resolve_source
from ssl_radiology.methods import create_method, view_settings
from ssl_radiology.methods.base import param_groups
from ssl_radiology.models import patch_size_of
from ssl_radiology.training.data import PretrainData
from ssl_radiology.training.trainer import build_trainer

SETTINGS = {
    "dino": {
        "backbone": "vit_tiny_patch16_224",
        "head": {"hidden_dim": 512, "bottleneck_dim": 128, "out_dim": 4096},
        "views": {"n_local": 4},
    },
    "simclr": {"backbone": "resnet18", "projection": {"hidden_dim": 512, "out_dim": 128}},
    "mae": {"backbone": "vit_tiny_patch16_224", "decoder": {"dim": 128, "depth": 2, "num_heads": 4}},
}


def settings_for(method: str, image_size: int, batch_size: int) -> dict:
    from omegaconf import OmegaConf

    from ssl_radiology.config import load_group

    base = OmegaConf.to_container(load_group("method", method), resolve=True)
    merged = OmegaConf.merge(
        base, SETTINGS[method], {"image_size": image_size, "batch_size": batch_size, "seed": 0}
    )
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def data_for(settings: dict, source: Path, workers: int) -> PretrainData:
    views = view_settings(settings, patch_size_of(settings["backbone"]))
    return PretrainData(
        [open_source(str(source))], views, batch_size=settings["batch_size"], workers=workers, seed=0
    )


def framework_rate(
    settings: dict, source: Path, steps: int, warmup: int, workers: int
) -> tuple[float, float]:
    """(images per wall second, per CPU second) of ``Trainer.fit`` over ``steps`` steps after ``warmup``."""

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == warmup:
                self.start = (time.perf_counter(), time.process_time())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            # before the checkpoint callback's final save (a file write, not a training step)
            if trainer.global_step == warmup + steps:
                self.elapsed = (time.perf_counter() - self.start[0], time.process_time() - self.start[1])

    L.seed_everything(0, verbose=False)
    module = create_method(settings["name"], settings)
    with tempfile.TemporaryDirectory() as run:
        trainer = build_trainer(
            run,
            max_steps=warmup + steps,
            accelerator="cpu",
            checkpoint_every=10**9,
            keep_checkpoints=1,
            clip_grad=settings.get("clip_grad"),
        )
        timer = Timer()
        trainer.callbacks.insert(0, timer)
        trainer.fit(module, datamodule=data_for(settings, source, workers))
    images = steps * settings["batch_size"]
    return images / timer.elapsed[0], images / timer.elapsed[1]


def bare_rate(settings: dict, source: Path, steps: int, warmup: int, workers: int) -> tuple[float, float]:
    """(images per wall second, per CPU second) of a hand-written loop with the same parts and loader."""
    L.seed_everything(0, verbose=False)
    module = create_method(settings["name"], settings)
    module.total_steps = warmup + steps
    module.monitor_step = False  # a bare loop computes no collapse monitors
    data = data_for(settings, source, workers)
    data.setup()
    optimizer = torch.optim.AdamW(param_groups(module), lr=1e-4, betas=tuple(settings["optimizer"]["betas"]))
    clip = settings.get("clip_grad")
    params = [p for p in module.parameters() if p.requires_grad]
    module.train()
    batches = itertools.chain.from_iterable(itertools.repeat(data.train_dataloader()))
    for step, batch in enumerate(batches):
        if step == warmup:
            start, cpu = time.perf_counter(), time.process_time()
        if step == warmup + steps:
            break
        with torch.no_grad():
            views = module.augment(batch["views"], batch["is_ct"])
        loss, _ = module.compute_loss(views, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if settings["name"] == "dino":
            update_momentum(module.student_backbone, module.teacher_backbone, 0.996)
            update_momentum(module.student_head, module.teacher_head, 0.996)
    images = steps * settings["batch_size"]
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu)


def pipeline_rate(source: Path, image_size: int, items: int) -> float:
    """DINO multi-crop views per second in one process (2 global + 8 local crops per image)."""
    settings = settings_for("dino", image_size, 1)
    settings["views"]["n_local"] = 8
    data = data_for(settings, source, 0)
    data.setup()
    sampler = iter(copy.deepcopy(data.sampler))
    keys = [next(sampler) for _ in range(min(items, len(data.sampler)))]
    for key in keys[:5]:
        data.dataset[key]
    start = time.perf_counter()
    for key in keys:
        data.dataset[key]
    return len(keys) * 10 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="phantom")
    parser.add_argument("--methods", default="dino,simclr,mae")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare / framework rounds")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--pipeline-size", type=int, default=224, help="global crop size for the pipeline figure"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    source = resolve_source(args.data)
    print(
        f"data {source}, image {args.image_size}px, batch {args.batch_size}, {args.steps} timed steps, "
        f"{args.rounds} rounds, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}"
    )
    for method in args.methods.split(","):
        settings = settings_for(method, args.image_size, args.batch_size)
        bares, frameworks = [], []
        for _ in range(args.rounds):
            bares.append(bare_rate(settings, source, args.steps, args.warmup, 0))
            frameworks.append(framework_rate(settings, source, args.steps, args.warmup, 0))
        for kind, k in (("CPU", 1), ("wall", 0)):
            ratios = [f[k] / b[k] for f, b in zip(frameworks, bares, strict=True)]
            print(
                f"{method:7s} {settings['backbone']:22s} per {kind:4s} s: framework "
                f"{statistics.median(f[k] for f in frameworks):7.1f} img/s   bare "
                f"{statistics.median(b[k] for b in bares):7.1f} img/s   ratio median {statistics.median(ratios):.3f} "
                f"(rounds {', '.join(f'{r:.3f}' for r in ratios)}; load average {os.getloadavg()[0]:.2f})"
            )
    rate = pipeline_rate(source, args.pipeline_size, 60)
    print(
        f"pipeline DINO multi-crop ({args.pipeline_size}px + 8 local): {rate:.0f} views/s per worker "
        f"({rate / 10:.0f} images/s)"
    )


if __name__ == "__main__":
    main()
