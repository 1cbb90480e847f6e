"""``ssl-rad analyze {cka,knn,umap,domains}``: feature-space analysis of checkpoints, written as JSON + PNG.

The work lives in :mod:`ssl_radiology.analysis.pipeline` (shared with the notebooks in ``analysis/``); this
module only turns the command line into those calls.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ANALYSES = ("cka", "knn", "umap", "domains")


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
    from ssl_radiology.analysis import pipeline
    from ssl_radiology.errors import UserError

    settings = pipeline.load_settings(args.image_size, args.overrides, args.device, args.feature_cache)
    checkpoints = pipeline.checkpoint_specs(args.checkpoint, args.name, args.backbone, args.seed)
    out = Path(args.out)
    if args.analysis == "knn":
        if len(args.data) != 1:
            raise UserError(f"knn evaluates on one labelled task; got --data {' '.join(args.data)}")
        result = pipeline.run_knn(checkpoints, args.data[0], settings, out, per_layer=args.per_layer)
    else:
        sample = pipeline.sample_domains(args.data, settings.image_size, args.max_samples, args.seed)
        runner = {"cka": pipeline.run_cka, "umap": pipeline.run_umap, "domains": pipeline.run_domains}
        result = runner[args.analysis](checkpoints, sample, settings, out, seed=args.seed)
    print(result["caption"])
    print(f"wrote {out / (args.analysis + '.json')}")
    return 0
