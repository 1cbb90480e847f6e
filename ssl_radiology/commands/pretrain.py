"""``ssl-rad pretrain``: self-supervised pre-training on prepared sources.

Settings come from ``configs/method/<method>.yaml`` and ``configs/train/default.yaml``, then the flags, then
``key=value`` overrides anywhere on the line (``method.head.out_dim=4096``, ``train.keep_checkpoints=5``);
the resolved tree is saved as ``RUN_DIR/config.yaml``. The work is :func:`ssl_radiology.api.pretrain`.

Launching on many GPUs: ``--devices 8`` on one machine (Lightning starts the processes), or one process
per GPU under ``torchrun`` / SLURM ``srun`` with ``--devices`` and ``--num-nodes`` matching the launch.
"""

from __future__ import annotations

import argparse

from ssl_radiology.api.types import PretrainRequest
from ssl_radiology.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", required=True, help="SSL method: dino, simclr, mae, ... (configs/method/)"
    )
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
        "--fraction",
        type=float,
        default=1.0,
        help="share of each source's patients to pre-train on (seeded by --seed, nested across fractions)",
    )
    parser.add_argument(
        "--backbone",
        help="any timm model name, or a configs/model/ name (vit_small, resnet50, ...) "
        "(default: the method's, e.g. ViT-S/16 for DINO)",
    )
    parser.add_argument("--image-size", type=int, help="global crop size in pixels (default: the method's)")
    parser.add_argument("--batch-size", type=int, help="images per device per step (default: the method's)")
    parser.add_argument("--max-steps", type=int, help="optimizer steps to train for")
    parser.add_argument("--max-epochs", type=int, help="epochs to train for (instead of --max-steps)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, views and data order")
    parser.add_argument("--out", help="run directory (default: runs/pretrain-<method>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from RUN_DIR/checkpoints/last.ckpt if it exists (else start)",
    )
    parser.add_argument("--devices", type=int, help="devices per node (default: train.devices)")
    parser.add_argument("--num-nodes", type=int, help="number of nodes (default: train.num_nodes)")
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], help="default: train.accelerator")
    parser.add_argument(
        "--precision", help="Lightning precision: 32-true, bf16-mixed, 16-mixed (default: auto)"
    )
    parser.add_argument("--workers", type=int, help="data loader worker processes per device")
    parser.add_argument("--checkpoint-every", type=int, help="save checkpoints/step=N.ckpt every N steps")
    parser.add_argument(
        "--init",
        metavar="SPEC",
        help="continue pre-training from weights: imagenet:TAG, imagenet:FILE, a .safetensors backbone, "
        "a .ckpt or a run directory (our runs of the same method: heads and teacher too)",
    )
    parser.add_argument(
        "--export-heads",
        action="store_true",
        help="also export the whole method (heads, teacher) as RUN_DIR/method.safetensors for --init",
    )
    parser.set_defaults(overrides=[])


def parse_weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(w) for w in text.split(","))
    except ValueError as exc:
        raise UserError(f"--weights: expected comma-separated numbers like 0.7,0.3, got '{text}'") from exc


def request_from_args(args: argparse.Namespace) -> PretrainRequest:
    request = PretrainRequest(
        method=args.method,
        data=tuple(args.data),
        out=args.out,
        weights=parse_weights(args.weights) if args.weights else None,
        backbone=args.backbone,
        image_size=args.image_size,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        max_epochs=args.max_epochs,
        seed=args.seed,
        resume=args.resume,
        devices=args.devices,
        num_nodes=args.num_nodes,
        accelerator=args.accelerator,
        precision=args.precision,
        workers=args.workers,
        checkpoint_every=args.checkpoint_every,
        fraction=args.fraction,
        init=args.init,
        export_heads=args.export_heads,
        overrides=tuple(args.overrides),
    )
    request.check()
    return request


def run(args: argparse.Namespace) -> int:
    from ssl_radiology.api import pretrain

    pretrain(request_from_args(args))
    return 0
