"""``ssl-rad prepare SRC [SRC ...] --out DIR``: decode sources once into a prepared, memory-mapped dataset."""

from __future__ import annotations

import argparse

from ssl_radiology.data.prepare import CHUNK_FILES, prepare_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SRC", help="folders or files (DICOM, NIfTI, PNG)")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="prepared dataset folder (resumes if present)"
    )
    parser.add_argument(
        "--image-size", type=int, default=256, metavar="PX", help="side of the stored square slices"
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
        default=None,
        metavar="M",
        help="modality for files without one (PNG/NIfTI), e.g. CT or DX",
    )
    parser.add_argument(
        "--salt",
        default=None,
        metavar="S",
        help="salt for hashed ids (default: $SSL_RAD_SALT, else a random one in DIR/salt.secret)",
    )
    parser.add_argument(
        "--chunk-files", type=int, default=CHUNK_FILES, metavar="N", help="files per resumable chunk"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    summary = prepare_dataset(
        args.sources,
        args.out,
        image_size=args.image_size,
        workers=args.workers,
        modality=args.modality.upper() if args.modality else None,
        salt=args.salt,
        chunk_files=args.chunk_files,
        progress=not args.no_progress,
    )
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
