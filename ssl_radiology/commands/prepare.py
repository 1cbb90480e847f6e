"""``ssl-rad prepare SRC [SRC ...] --out DIR``: decode sources once into a prepared, memory-mapped dataset.

Also ``--shard I/N`` (one part of a multi-machine run) and ``--merge`` (join the parts), and
``ssl-rad prepare --verify DIR`` (compare every file of a prepared dataset with its recorded checksum).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ssl_radiology.data.layout import CHUNK_FILES, MODALITIES
from ssl_radiology.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources", nargs="*", metavar="SRC", help="folders or files (DICOM, NIfTI, PNG, JPEG, TIFF)"
    )
    parser.add_argument(
        "--out", metavar="DIR", help="prepared dataset folder (resumes and repairs if present)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=256,
        metavar="PX",
        help="side of the stored square slices (default: 256)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="decoder processes (default: all cores; 0/1: in-process)",
    )
    parser.add_argument(
        "--modality",
        type=str.upper,
        choices=MODALITIES,
        default=None,
        metavar="M",
        help=f"modality for files without one (PNG/NIfTI): {', '.join(MODALITIES)}",
    )
    parser.add_argument(
        "--salt",
        default=None,
        metavar="S",
        help="secret for this dataset's keys instead of the installation key (default: $SSL_RAD_SALT, else the "
        "installation key); keys are then not comparable with other datasets",
    )
    parser.add_argument(
        "--chunk-files",
        type=int,
        default=CHUNK_FILES,
        metavar="N",
        help=f"files per resumable chunk (default: {CHUNK_FILES})",
    )
    parser.add_argument(
        "--max-image-mb",
        type=float,
        default=None,
        metavar="MB",
        help="refuse files that decode to more than this (default: available memory / workers / 4)",
    )
    parser.add_argument(
        "--keep-paths",
        action="store_true",
        help="also write DIR/paths.csv (file key -> path); paths may identify patients: keep it private",
    )
    parser.add_argument(
        "--verify",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="with SRC: compare every checksum while resuming (repairs damage); alone, '--verify DIR' only checks",
    )
    parser.add_argument("--shard", default=None, metavar="I/N", help="prepare only part I of N (0 <= I < N)")
    parser.add_argument(
        "--merge", action="store_true", help="join the finished --shard parts into one dataset"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.verify and not args.sources:
        return _verify_only(args.verify)
    if not args.sources:
        raise UserError("prepare needs SRC folders or files (or '--verify DIR' to check a prepared dataset)")
    if not args.out:
        raise UserError("prepare needs --out DIR, the prepared dataset folder")
    from ssl_radiology.api import PrepareRequest, prepare
    from ssl_radiology.data.plan import parse_shard

    request = PrepareRequest(
        sources=tuple(args.sources),
        out=args.out,
        image_size=args.image_size,
        workers=args.workers,
        modality=args.modality,
        salt=args.salt,
        chunk_files=args.chunk_files,
        progress=not args.no_progress,
        keep_paths=args.keep_paths,
        max_image_mb=args.max_image_mb,
        verify=args.verify is not None,
        shard=parse_shard(args.shard) if args.shard is not None else None,
        merge=args.merge,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = prepare(request)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    for what in summary.repaired:
        print(f"  repaired {what}")
    if not summary.complete:
        done = summary.chunks_processed
        print(
            f"{summary.out}: part {args.shard} done ({done} chunks prepared now, {summary.chunks} in all parts)"
        )
        print(f"  when every part is done: ssl-rad prepare SRC ... --out {summary.out} --merge")
        return 0
    modalities = ", ".join(f"{m} {n}" for m, n in sorted(summary.slices_by_modality.items())) or "none"
    resumed = summary.chunks - summary.chunks_processed
    print(f"{summary.out}: {summary.slices} slices ({modalities}) from {summary.files} files")
    if resumed:
        print(f"  {resumed} of {summary.chunks} chunks were already done and kept")
    if summary.rejected:
        print(f"  {summary.rejected} files rejected (details: {summary.out / 'rejected.csv'}):")
        for reason, count in list(summary.rejected_by_reason.items())[:10]:
            print(f"    {count:6d}  {reason}")
    return 0 if summary.slices else 1


def _verify_only(folder: str) -> int:
    """Compare every file of a finished dataset with its checksum; exit 1 (and say how to repair) on damage."""
    from pathlib import Path

    from ssl_radiology.data.assemble import verify
    from ssl_radiology.data.prepared import read_info

    root = Path(folder)
    problems = verify(root, read_info(root))
    if problems:
        for problem in problems:
            print(f"damaged: {root / problem}")
        raise UserError(
            f"{root}: {len(problems)} damaged file(s); re-run the 'ssl-rad prepare SRC --out {root}' command that "
            "made it to repair them"
        )
    print(f"{root}: every file matches its checksum")
    return 0
