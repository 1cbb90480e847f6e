"""The ``ssl-rad`` command line.

Subcommands live in ``ssl_radiology.commands.<module>`` and are imported only when invoked, so that
``ssl-rad --help`` stays fast and a command's heavy imports (torch, faiss, umap) never slow down another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ssl_radiology import __version__
from ssl_radiology.errors import UserError, describe_os_error

#: subcommand name -> (module under ssl_radiology.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "phantom": ("phantom", "generate the built-in synthetic CT / X-ray corpus as DICOM and NIfTI"),
    "prepare": ("prepare", "decode DICOM / NIfTI / PNG sources into a prepared, memory-mapped dataset"),
    "pretrain": ("pretrain", "self-supervised pre-training (SimCLR, DINO, MAE) on prepared sources"),
    "experiment": ("experiment", "run a transfer study (pre-train, evaluate, analyse) and write report.md"),
    "knn": ("knn", "kNN evaluation (DINO protocol) of a checkpoint on a labelled task, per seed"),
    "linear-eval": ("linear_eval", "linear evaluation (SGD head / logistic regression) on frozen features"),
    "finetune": ("finetune", "fine-tune a checkpoint on a labelled task, per seed, with early stopping"),
    "compare": ("compare", "compare evaluation results: mean ± std, 95% CI, Welch's t-test, table and plot"),
    "analyze": ("analyze", "feature-space analysis: CKA, kNN, UMAP, domain metrics"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssl-rad",
        description="Self-supervised pre-training on CT slices and chest X-rays, and transfer evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"ssl-rad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def run_command(argv: Sequence[str]) -> int:
    """Parse and run one subcommand, letting its exceptions through (the experiment runner records them)."""
    argv = list(argv)
    if not argv or argv[0].startswith("-") or argv[0] not in COMMANDS:
        build_parser().parse_args(argv or ["--help"])  # prints help / version / "invalid choice" and exits
        return 2
    name = argv[0]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(f"ssl_radiology.commands.{module_name}")
    cmd_parser = argparse.ArgumentParser(prog=f"ssl-rad {name}", description=help_text)
    module.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    return int(module.run(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run_command(sys.argv[1:] if argv is None else argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = describe_os_error(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
