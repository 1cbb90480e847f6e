"""``ssl-rad pretrain``: self-supervised pre-training (SimCLR, DINO, MAE) on prepared sources.

Settings come from ``configs/method/<method>.yaml``, then the command-line flags, then dotted
``key=value`` overrides (``method.head.out_dim=4096``, ``train.keep_checkpoints=5``); the resolved tree
is saved as ``RUN_DIR/config.yaml``. Every setting is checked before any data is prepared or read.

Launching on many GPUs: ``--devices 8`` on one machine (Lightning starts the processes), or one process
per GPU under ``torchrun`` / SLURM ``srun`` with ``--devices`` and ``--num-nodes`` matching the launch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_radiology.config import compose, save
from ssl_radiology.errors import UserError

#: ``train`` settings and their defaults (flags set the same keys)
TRAIN_DEFAULTS: dict[str, Any] = {
    "data": [],
    "weights": None,
    "max_steps": None,
    "max_epochs": None,
    "stop_at_step": None,  # end this job early (checkpointed) while keeping the schedule of the full run
    "devices": 1,
    "num_nodes": 1,
    "accelerator": "auto",
    "precision": None,  # None: bf16-mixed on a GPU with bf16, 32-true elsewhere
    "workers": 4,
    "checkpoint_every": 500,
    "keep_checkpoints": 3,
    "accumulate": 1,
    "log_every": 10,
    "loggers": ["csv"],  # add tensorboard / wandb / mlflow (their packages are optional)
    "epoch_length": None,  # samples per epoch; None = every slice of every source once
    "debug_seen": False,  # write RUN_DIR/seen_rank{r}.txt with the indices each rank trained on
    "collapse_guard": {"min_std": 0.05, "every_n_steps": 50, "grace_steps": 100},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, help="simclr, dino or mae (configs/method/<name>.yaml)")
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="SOURCE",
        help="named source (phantom, radnet, ...), NAME:MODALITY (phantom:CT) or prepared folder; "
        "repeat to mix sources",
    )
    parser.add_argument("--weights", help="sampling weights of the --data sources, e.g. 0.7,0.3")
    parser.add_argument(
        "--backbone", help="any timm model name (default: ViT-S/16 for DINO/MAE, ResNet-50 for SimCLR)"
    )
    parser.add_argument("--image-size", type=int, help="global crop size in pixels")
    parser.add_argument("--batch-size", type=int, help="images per device per step")
    parser.add_argument("--max-steps", type=int, help="optimizer steps to train for")
    parser.add_argument("--max-epochs", type=int, help="epochs to train for (instead of --max-steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="run directory (default: runs/pretrain-<method>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from RUN_DIR/checkpoints/last.ckpt if it exists (else start)",
    )
    parser.add_argument("--devices", type=int, help="devices per node")
    parser.add_argument("--num-nodes", type=int, help="number of nodes")
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu"])
    parser.add_argument(
        "--precision", help="Lightning precision: 32-true, bf16-mixed, 16-mixed (default: auto)"
    )
    parser.add_argument("--workers", type=int, help="data loader worker processes per device")
    parser.add_argument("--checkpoint-every", type=int, help="save checkpoints/step=N.ckpt every N steps")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. method.head.out_dim=4096 train.keep_checkpoints=5",
    )


def parse_weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError as exc:
        raise UserError(f"--weights: expected comma-separated numbers like 0.7,0.3, got '{text}'") from exc


def settings_from_args(args: argparse.Namespace) -> DictConfig:
    """Compose ``configs/method/<method>.yaml`` + flags + overrides into one checked config."""
    if args.max_steps is not None and args.max_epochs is not None:
        raise UserError("--max-steps and --max-epochs are exclusive; give one")
    method_flags = {"backbone": args.backbone, "image_size": args.image_size, "batch_size": args.batch_size}
    train_flags = {
        "data": list(args.data),
        "weights": parse_weights(args.weights) if args.weights else None,
        "max_steps": args.max_steps,
        "max_epochs": args.max_epochs,
        "devices": args.devices,
        "num_nodes": args.num_nodes,
        "accelerator": args.accelerator,
        "precision": args.precision,
        "workers": args.workers,
        "checkpoint_every": args.checkpoint_every,
    }
    base = {
        "method": {"seed": args.seed, **{k: v for k, v in method_flags.items() if v is not None}},
        "train": {**TRAIN_DEFAULTS, **{k: v for k, v in train_flags.items() if v is not None}},
    }
    try:
        cfg = compose({"method": args.method}, args.overrides, base=base)
    except UserError as exc:
        raise UserError(f"--method: {exc}") from exc
    check_train(cfg)
    return cfg


def check_train(cfg: DictConfig) -> None:
    train, method = cfg.train, cfg.method
    if train.max_steps is not None and train.max_epochs is not None:
        raise UserError("train.max_steps and train.max_epochs are exclusive; give one")
    if train.max_steps is None and train.max_epochs is None:
        raise UserError("give --max-steps or --max-epochs")
    for key in (
        "max_steps",
        "max_epochs",
        "stop_at_step",
        "devices",
        "num_nodes",
        "checkpoint_every",
        "accumulate",
        "keep_checkpoints",
    ):
        value = train.get(key)
        if value is not None and int(value) < 1:
            raise UserError(f"train.{key} must be ≥ 1, got {value}")
    if int(train.workers) < 0:
        raise UserError(f"--workers must be ≥ 0, got {train.workers}")
    minimum = 2 if method.name == "simclr" else 1
    if int(method.batch_size) < minimum:
        raise UserError(f"--batch-size must be ≥ {minimum} for {method.name}, got {method.batch_size}")
    if train.weights is not None and len(train.weights) != len(train.data):
        raise UserError(f"--weights: {len(train.weights)} weights for {len(train.data)} --data sources")


def resume_checkpoint(run_dir: Path, cfg: DictConfig, resume: bool) -> Path | None:
    """``last.ckpt`` to continue from, after checking that the run's settings did not change."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    if not resume:
        raise UserError(
            f"{run_dir} already holds a run ({last}); pass --resume to continue it or choose another --out"
        )
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = OmegaConf.load(saved_path)
        changed = [
            k for k in sorted(set(saved.method) | set(cfg.method)) if saved.method.get(k) != cfg.method.get(k)
        ]
        if changed or list(saved.train.data) != list(cfg.train.data):
            what = ", ".join(f"method.{k}" for k in changed) or "train.data"
            raise UserError(
                f"--resume: settings differ from {saved_path} ({what}); resume with the same settings"
            )
    return last


def run(args: argparse.Namespace) -> int:
    cfg = settings_from_args(args)
    run_dir = (args.out or Path("runs") / f"pretrain-{cfg.method.name}").resolve()
    ckpt = resume_checkpoint(run_dir, cfg, args.resume)

    import lightning as L

    from ssl_radiology.data import open_source
    from ssl_radiology.methods import create_method, view_settings
    from ssl_radiology.models.backbones import patch_size_of
    from ssl_radiology.training.data import PretrainData
    from ssl_radiology.training.trainer import build_trainer, check_loggers

    settings: dict[str, Any] = OmegaConf.to_container(cfg.method, resolve=True)  # type: ignore[assignment]
    train: dict[str, Any] = OmegaConf.to_container(cfg.train, resolve=True)  # type: ignore[assignment]
    L.seed_everything(int(args.seed), workers=True, verbose=False)
    module = create_method(settings["name"], settings)  # validates backbone / sizes before any data work
    check_loggers(list(train["loggers"]))
    data = PretrainData(
        [open_source(src) for src in train["data"]],
        view_settings(settings, patch_size_of(settings["backbone"])),
        batch_size=int(settings["batch_size"]),
        workers=int(train["workers"]),
        seed=int(args.seed),
        weights=train["weights"],
        epoch_length=train["epoch_length"],
    )
    trainer = build_trainer(
        run_dir,
        max_steps=int(train["stop_at_step"] or train["max_steps"] or -1),
        max_epochs=train["max_epochs"],
        devices=int(train["devices"]),
        num_nodes=int(train["num_nodes"]),
        accelerator=str(train["accelerator"]),
        precision=train["precision"],
        checkpoint_every=int(train["checkpoint_every"]),
        keep_checkpoints=int(train["keep_checkpoints"]),
        clip_grad=settings.get("clip_grad"),
        accumulate=int(train["accumulate"]),
        log_every=int(train["log_every"]),
        debug_seen=bool(train["debug_seen"]),
        collapse_guard=train["collapse_guard"],
        loggers=list(train["loggers"]),
    )
    module.schedule_steps = train["max_steps"]  # type: ignore[assignment]
    if trainer.is_global_zero:
        save(cfg, run_dir)
        for stale in (run_dir / "checkpoints").glob("*.tmp-*"):  # left by a save that was killed
            stale.unlink()
    trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if ckpt else None)
    if trainer.interrupted:
        raise KeyboardInterrupt
    if trainer.is_global_zero:
        print(
            f"pre-trained {settings['name']} ({settings['backbone']}) for {trainer.global_step} steps → {run_dir}"
        )
    return 0
