"""Every ``ssl-rad`` command shown in the README names a real subcommand and parses with its real flags.

Behaviour is covered by each command's own tests; this guards the user's guide against drifting from the
command line (a renamed flag, a removed subcommand, a misspelt override key).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ssl_radiology.cli import available_commands, parse_command
from ssl_radiology.config import compose
from ssl_radiology.experiment import load_spec

README = Path(__file__).resolve().parent.parent / "README.md"
EVAL_CONFIGS = {"knn": "knn", "linear-eval": "linear", "finetune": "finetune"}


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
    """Through the real entry (``cli.parse_command``): overrides wherever they stand, flags, choices."""
    argv = shlex.split(command)
    assert argv[0] in available_commands(), f"README shows unknown subcommand {argv[0]!r}"
    try:
        name, args, _module = parse_command(argv)
    except SystemExit as exc:  # argparse rejected the line
        pytest.fail(f"README command does not parse: ssl-rad {command} (exit {exc.code})")
    overrides = list(getattr(args, "overrides", []))
    if name == "pretrain":  # override keys must exist in the composed method + train config
        compose({"method": args.method, "train": "default"}, overrides)
    elif name in EVAL_CONFIGS and overrides:
        compose({"eval": EVAL_CONFIGS[name]}, [f"eval.{o}" for o in overrides])
    elif name == "experiment":
        load_spec(args.config, overrides)


def test_parse_command_rejects_what_the_readme_must_not_show() -> None:
    with pytest.raises(SystemExit):
        parse_command(["knn", "--checkpoint", "random", "--data", "phantom-ct", "--no-such-flag"])
    with pytest.raises(SystemExit):
        parse_command(["linear-eval", "--checkpoint", "random", "--data", "phantom-ct", "--method", "sgd"])
