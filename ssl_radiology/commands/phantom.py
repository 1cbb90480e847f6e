"""``ssl-rad phantom``: write the built-in synthetic CT / chest X-ray corpus as DICOM, NIfTI and label CSVs.

The corpus is what tests, the demo and first-time users train and evaluate on without downloading anything;
see ``ssl_radiology.data.phantom`` for what it contains.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, help="output folder (new, empty, or a previous phantom corpus)"
    )
    parser.add_argument("--cases", type=int, default=8, help="number of synthetic patients")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, identical files")
    parser.add_argument("--ct-size", type=int, default=128, help="CT matrix size in pixels")
    parser.add_argument("--xray-size", type=int, default=256, help="radiograph size in pixels")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ssl_radiology.data.phantom import generate_phantom

    console = Console(stderr=True)
    columns = (TextColumn("phantom"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("cases", total=max(args.cases, 0))
        summary = generate_phantom(
            args.out,
            cases=args.cases,
            seed=args.seed,
            ct_size=args.ct_size,
            xray_size=args.xray_size,
            on_case=lambda _case: progress.advance(task),
        )
    print(
        f"phantom corpus: {summary.cases} cases ({summary.dicom_series} DICOM series, "
        f"{summary.nifti_volumes} NIfTI volumes), {summary.ct_slices} CT slices, {summary.xrays} X-rays "
        f"-> {summary.out_dir}"
    )
    print(f"labels: {summary.ct_labels} and {summary.xray_labels}")
    return 0
