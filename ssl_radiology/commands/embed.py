"""``ssl-rad embed``: a checkpoint's features (pooled, optionally patch tokens) with keys, to Parquet / NPY.

The work lives in :func:`ssl_radiology.analysis.embedding.embed`; this module only turns the command line
into that call. Nothing heavy is imported before ``run``.
"""

from __future__ import annotations

import argparse

POOLINGS = ("model", "cls", "mean")  # features.extract.FINAL_POOLINGS, spelled out for a fast --help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="run dir | .ckpt | .safetensors | imagenet[:FILE] | random"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="prepared source (phantom, phantom:CT, a prepared folder) or labelled task (phantom-ct, a task "
        "YAML, medmnist:FILE, ...); a task adds patient_key, split and label columns",
    )
    parser.add_argument(
        "--out", required=True, help="FILE.parquet (one file) or FILE.npy (+ FILE.keys.csv, FILE.json)"
    )
    parser.add_argument(
        "--patch-tokens",
        action="store_true",
        help="also write the last layer's patch tokens (N x T x C; ViT class/register tokens dropped)",
    )
    parser.add_argument("--backbone", default=None, help="timm name (needed for random / imagenet)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="input size in pixels (default: the run's, else config)"
    )
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="model",
        help="pooled features: the backbone's own output (CLS token of a ViT, average of a CNN), the class "
        "token or the patch-token mean of the last layer",
    )
    parser.add_argument("--seed", type=int, default=0, help="random-weight seed (--checkpoint random)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument(
        "--feature-cache", default=None, help="feature cache folder (default: <cache>/features)"
    )
    parser.set_defaults(overrides=[])  # key=value: configs/eval/knn.yaml (window, batch_size, workers)


def run(args: argparse.Namespace) -> int:
    from ssl_radiology.analysis.embedding import embed
    from ssl_radiology.api.types import BackboneRef

    summary = embed(
        BackboneRef(args.checkpoint, args.backbone, seed=args.seed),
        args.data,
        args.out,
        patch_tokens=args.patch_tokens,
        image_size=args.image_size,
        pooling=args.pooling,
        device=args.device,
        feature_cache=args.feature_cache,
        overrides=args.overrides,
    )
    print(
        f"{summary['rows']} images x {summary['feature_dim']} features at {summary['image_size']} px "
        f"(weights {summary['checkpoint_hash']}) -> {', '.join(summary['files'])}"
    )
    return 0
