"""Every ``ssl-rad`` command shown in the README names a real subcommand and parses with its real flags.

Behaviour is covered by each command's own tests; this guards the user's guide against drifting from the
command line (a renamed flag, a removed subcommand, a misspelt override key).
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from ssl_radiology.cli import COMMANDS
from ssl_radiology.config import compose

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[str]:
    """``ssl-rad`` invocations inside fenced bash blocks, with line continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if "ssl-rad " in line or "-m ssl_radiology " in line:
                commands.append(re.split(r"ssl-rad |-m ssl_radiology ", line, maxsplit=1)[1])
    return commands


def test_the_readme_shows_commands() -> None:
    found = {c.split()[0] for c in readme_commands()}
    assert {
        "prepare",
        "pretrain",
        "knn",
        "linear-eval",
        "finetune",
        "compare",
        "analyze",
        "experiment",
    } <= found
    head = "\n".join(README.read_text().splitlines()[:40])
    assert "make demo" in head and "make test" in head


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command: str) -> None:
    argv = shlex.split(command)
    assert argv[0] in COMMANDS, f"README shows unknown subcommand {argv[0]!r}"
    module = importlib.import_module(f"ssl_radiology.commands.{COMMANDS[argv[0]][0]}")
    parser = argparse.ArgumentParser(prog=f"ssl-rad {argv[0]}", exit_on_error=False)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    method_overrides = [o for o in getattr(args, "overrides", []) if o.startswith("method.")]
    if argv[0] == "pretrain" and method_overrides:  # override keys must exist in the method's config
        compose({"method": args.method}, method_overrides)
