"""The ``ssl-rad`` command line.

Subcommands live in ``ssl_radiology.commands.<module>`` and are imported only when invoked, so that
``ssl-rad --help`` stays fast and a command's heavy imports (torch, faiss, umap) never slow down another.
Command modules only translate arguments into the request objects of :mod:`ssl_radiology.api`.

One override syntax for every command: ``key=value`` tokens anywhere on the line (before, between or after
flags) are collected into ``args.overrides`` and applied to the command's YAML config.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from collections.abc import Sequence

from ssl_radiology import __version__
from ssl_radiology.errors import UserError, describe_os_error

#: subcommand name -> (module under ssl_radiology.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "phantom": ("phantom", "generate the built-in synthetic CT / X-ray corpus as DICOM and NIfTI"),
    "prepare": ("prepare", "decode DICOM / NIfTI / PNG sources into a prepared, memory-mapped dataset"),
    "pretrain": ("pretrain", "self-supervised pre-training (SimCLR, DINO, MAE, ...) on prepared sources"),
    "experiment": ("experiment", "run a transfer study (pre-train, evaluate, analyse) and write report.md"),
    "knn": ("knn", "kNN evaluation (DINO protocol) of a checkpoint on a labelled task, per seed"),
    "linear-eval": ("linear_eval", "linear evaluation (SGD head / logistic regression) on frozen features"),
    "finetune": ("finetune", "fine-tune a checkpoint on a labelled task, per seed, with early stopping"),
    "compare": ("compare", "compare evaluation results: mean ± std, 95% CI, tests, table and plot"),
    "analyze": ("analyze", "feature-space analysis: CKA, kNN, UMAP, domain metrics"),
    "embed": ("embed", "write a checkpoint's features (CLS / patch tokens) with keys to a file"),
}

#: a dotted ``key=value`` override token (``method.head.out_dim=64``, ``logreg.cs=[0.1,1]``)
OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")

EPILOG = (
    "key=value tokens anywhere on the line override settings of the command's YAML config "
    "(after any --settings FILE)."
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults that say something (not None / False) and takes a literal '%' in help texts."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = re.sub(r"%(?!\()", "%%", action.help or "")
        if action.default in (None, False, [], "", argparse.SUPPRESS) or "%(default)" in text:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


def available_commands() -> dict[str, tuple[str, str]]:
    """The registered commands whose module exists (a command added by a teammate may not be there yet)."""
    return {
        name: entry
        for name, entry in COMMANDS.items()
        if importlib.util.find_spec(f"ssl_radiology.commands.{entry[0]}") is not None
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssl-rad",
        description="Self-supervised pre-training on CT slices and chest X-rays, and transfer evaluation.",
        epilog="Run 'ssl-rad COMMAND --help' for a command's options.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ssl-rad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in available_commands().items():
        sub.add_parser(name, help=help_text, add_help=False, formatter_class=HelpFormatter)
    return parser


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The argument parser of one subcommand and its module."""
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(f"ssl_radiology.commands.{module_name}")
    parser = argparse.ArgumentParser(  # no abbreviated flags: a value is never mistaken for an override
        prog=f"ssl-rad {name}", description=help_text, formatter_class=HelpFormatter, allow_abbrev=False
    )
    module.add_arguments(parser)  # type: ignore[attr-defined]
    if parser.get_default("overrides") is not None:
        parser.add_argument(
            "--settings",
            action="append",
            default=[],
            metavar="FILE",
            help="YAML file of settings (same keys as the overrides), applied before key=value overrides",
        )
        parser.epilog = EPILOG
    return parser, module


def split_overrides(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` override tokens from the rest, wherever they stand.

    A token that is the value of a preceding option (``--set window=[40,400]``) stays with its option.
    """
    overrides: list[str] = []
    rest: list[str] = []
    takes_value = False
    for token in argv:
        if takes_value:
            rest.append(token)
            takes_value = False
        elif token.startswith("-"):
            action = parser._option_string_actions.get(token.split("=", 1)[0])
            takes_value = action is not None and action.nargs != 0 and "=" not in token
            rest.append(token)
        elif OVERRIDE.match(token):
            overrides.append(token)
        else:
            rest.append(token)
    return overrides, rest


def parse_command(argv: Sequence[str]) -> tuple[str, argparse.Namespace, object]:
    """``(name, args, module)`` for ``argv`` = ``[COMMAND, ...]``; ``args.overrides`` holds every override."""
    argv = list(argv)
    if not argv or argv[0].startswith("-") or argv[0] not in available_commands():
        build_parser().parse_args(argv or ["--help"])  # prints help / version / "invalid choice" and exits
        raise SystemExit(2)
    name = argv[0]
    parser, module = command_parser(name)
    if parser.get_default("overrides") is None:  # no settings: a token with '=' is an ordinary argument
        return name, parser.parse_args(argv[1:]), module
    overrides, rest = split_overrides(parser, argv[1:])
    args = parser.parse_args(rest)
    from ssl_radiology.config import file_overrides  # omegaconf: only when a command runs

    from_files = [item for path in args.settings for item in file_overrides(path)]
    args.overrides = [*from_files, *(args.overrides or []), *overrides]
    return name, args, module


def run_command(argv: Sequence[str]) -> int:
    """Parse and run one subcommand, letting its exceptions through."""
    _name, args, module = parse_command(argv)
    return int(module.run(args) or 0)  # type: ignore[attr-defined]


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
