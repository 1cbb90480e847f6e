"""``ssl-rad analyze {cka,knn,umap,domains}``: feature-space analysis of checkpoints, written as JSON + PNG.

The work lives in :mod:`ssl_radiology.analysis.analyses` (shared with the notebooks in ``analysis/``); this
module only turns the command line into an :class:`~ssl_radiology.api.types.AnalyzeRequest` for
:func:`ssl_radiology.api.analyze`. Nothing heavy is imported before ``run``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ANALYSES = ("cka", "knn", "umap", "domains")
POOLINGS = ("auto", "mean", "cls", "flat")  # features.layers.POOLINGS, spelled out for a fast --help
DEFAULT_POOLING = "auto"  # features.layers.DEFAULT_POOLING (a test keeps them equal)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("analysis", choices=ANALYSES, help="which analysis to run")
    parser.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="run dir | .ckpt | .safetensors | imagenet[:FILE] | random; repeat for several",
    )
    parser.add_argument(
        "--name", action="append", default=None, help="display name per --checkpoint, in order"
    )
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        help="source (phantom, natural, a prepared folder) or task (phantom-ct); repeat for several. "
        "knn takes one labelled task",
    )
    parser.add_argument("--backbone", default=None, help="timm name (needed for random / imagenet)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="model input size (default: eval config)"
    )
    parser.add_argument(
        "--max-samples",
        type=int,
        default=300,
        help="images per domain for cka / umap / domains (seeded sample)",
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling, UMAP and random-weight seed")
    parser.add_argument(
        "--per-layer", action="store_true", help="knn: also per layer of the first checkpoint"
    )
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=DEFAULT_POOLING,
        help="how a layer's output becomes one vector for layer-wise CKA and per-layer kNN: the ViT class "
        "token (cls), the mean of the patch tokens / spatial mean (mean), all tokens flattened (flat); "
        "auto = cls for ViTs with a class token, else mean",
    )
    parser.add_argument("--out", default="analysis-results", help="output folder for JSON and PNG files")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument(
        "--feature-cache", default=None, help="feature cache folder (default: <cache>/features)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="eval config override (configs/eval/knn.yaml: window, batch_size, workers, temperature); repeat",
    )


def run(args: argparse.Namespace) -> int:
    from ssl_radiology.analysis.settings import backbone_refs
    from ssl_radiology.api import analyze
    from ssl_radiology.api.types import AnalyzeRequest

    request = AnalyzeRequest(
        analysis=args.analysis,
        backbones=tuple(backbone_refs(args.checkpoint, args.name, args.backbone, args.seed)),
        data=tuple(args.data),
        out=args.out,
        image_size=args.image_size,
        max_samples=args.max_samples,
        seed=args.seed,
        per_layer=args.per_layer,
        pooling=args.pooling,
        device=args.device,
        feature_cache=args.feature_cache,
        overrides=tuple(args.overrides),
    )
    result = analyze(request)
    print(result["caption"])
    print(f"wrote {Path(args.out) / (args.analysis + '.json')}")
    return 0
