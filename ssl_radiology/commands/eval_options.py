"""The options ``knn``, ``linear-eval`` and ``finetune`` share, and their translation into an ``EvalRequest``."""

from __future__ import annotations

import argparse

from ssl_radiology.api.types import BackboneRef, EvalRequest
from ssl_radiology.errors import UserError


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every evaluation command takes (``key=value`` overrides: ``configs/eval/<protocol>.yaml``)."""
    parser.add_argument(
        "--checkpoint", required=True, help="run dir | .ckpt | .safetensors | imagenet[:TAG|FILE] | random"
    )
    parser.add_argument(
        "--data", required=True, help="task: phantom-ct, phantom-xray, a task YAML, medmnist:FILE, ..."
    )
    parser.add_argument("--backbone", default=None, help="timm name (needed for random / imagenet)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="input size in pixels (default: the run's, else config)"
    )
    subset = parser.add_mutually_exclusive_group()
    subset.add_argument(
        "--fraction", type=float, default=1.0, help="stratified fraction of training patients"
    )
    subset.add_argument("--shots", type=int, default=None, help="k training samples per class instead")
    parser.add_argument("--seeds", default="0,1,2,3", help="comma-separated evaluation seeds")
    parser.add_argument(
        "--pretrain-seed",
        type=int,
        default=None,
        help="pre-training replicate the checkpoint came from (recorded in every result row)",
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="evaluate even if test patients were in the pre-training data (recorded in every row)",
    )
    parser.add_argument("--out", default="eval-results", help="result folder (resumable)")
    parser.add_argument(
        "--name", default=None, help="display name of this condition (default: from the spec)"
    )
    parser.add_argument("--ood-split", action="store_true", help="hold out site ood.site; report the drop")
    parser.add_argument("--subgroups", default="", help="comma list of sex,age,site: metrics per subgroup")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument(
        "--feature-cache", default=None, help="feature cache folder (default: <cache>/features)"
    )
    parser.set_defaults(overrides=[])


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as exc:
        raise UserError(f"--seeds must be comma-separated integers, got {text!r}") from exc
    if not seeds:
        raise UserError("--seeds is empty")
    return seeds


def eval_request(args: argparse.Namespace, protocol: str, head: str | None = None) -> EvalRequest:
    """The request of an evaluation command line, checked before any heavy work."""
    request = EvalRequest(
        protocol=protocol,
        backbone=BackboneRef(args.checkpoint, args.backbone, args.name),
        data=args.data,
        out=args.out,
        image_size=args.image_size,
        fraction=args.fraction,
        shots=args.shots,
        seeds=parse_seeds(args.seeds),
        ood_split=args.ood_split,
        subgroups=tuple(s.strip() for s in args.subgroups.split(",") if s.strip()),
        device=args.device,
        feature_cache=args.feature_cache,
        head=head,
        pretrain_seed=args.pretrain_seed,
        allow_overlap=args.allow_overlap,
        overrides=tuple(args.overrides),
    )
    request.check()
    return request
