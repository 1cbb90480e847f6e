"""The command-line surface: help for every command (fast, with defaults), overrides anywhere, clear errors."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ssl_radiology.cli import available_commands, main, parse_command

REPO = Path(__file__).resolve().parent.parent
HELP_SECONDS = 3.0  # the target is well under 1 s; the bound leaves room for a loaded CI machine


def _run(*argv: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_radiology", *argv], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    return proc, time.perf_counter() - start


@pytest.mark.parametrize("argv", [[], ["--help"], *([name, "--help"] for name in available_commands())])
def test_help_renders_quickly_without_heavy_imports(argv: list[str]) -> None:
    proc, seconds = _run(*argv)
    assert proc.returncode == 0, proc.stderr
    assert "usage: ssl-rad" in proc.stdout and "Traceback" not in proc.stderr
    assert seconds < HELP_SECONDS, f"ssl-rad {' '.join(argv)} took {seconds:.2f} s"
    if argv[:1] == ["--help"] or not argv:
        assert all(name in proc.stdout for name in available_commands())
        assert "95% CI" in proc.stdout


def test_help_is_light_and_shows_defaults() -> None:
    code = (
        "import sys; from ssl_radiology.cli import command_parser\n"
        "for name in ('knn', 'linear-eval', 'finetune', 'pretrain', 'experiment', 'compare'):\n"
        "    command_parser(name)[0].format_help()\n"
        "print(sorted(m for m in ('torch', 'lightning', 'timm', 'sklearn', 'faiss') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    knn_help = parse_help("knn")
    assert "(default: 0,1,2,3)" in knn_help and "(default: auto)" in knn_help
    assert "key=value" in knn_help


def parse_help(name: str) -> str:
    from ssl_radiology.cli import command_parser

    return command_parser(name)[0].format_help()


def test_overrides_are_accepted_anywhere_on_the_line() -> None:
    argv = [
        "pretrain",
        "a.b=1",
        "--method",
        "dino",
        "--data",
        "phantom",
        "c=2",
        "--max-steps",
        "1",
        "d.e=[1,2]",
    ]
    _name, args, _module = parse_command(argv)
    assert args.overrides == ["a.b=1", "c=2", "d.e=[1,2]"]
    assert args.method == "dino" and args.data == ["phantom"] and args.max_steps == 1


def test_an_option_value_that_looks_like_an_override_stays_with_its_option() -> None:
    _name, args, _module = parse_command(
        ["knn", "--checkpoint", "random", "--name", "run=1", "--data", "phantom-ct", "workers=0"]
    )
    assert args.name == "run=1" and args.overrides == ["workers=0"]


def test_command_without_settings_takes_equals_signs_as_arguments() -> None:
    _name, args, _module = parse_command(["compare", "lr=0.1", "--out", "cmp"])
    assert args.results == ["lr=0.1"] and not hasattr(args, "overrides")
    with pytest.raises(SystemExit):  # argparse: unrecognized arguments
        parse_command(["phantom", "--out", "x", "cases=3"])


def test_bad_override_names_the_override(capsys) -> None:
    argv = ["pretrain", "--method", "dino", "--data", "phantom", "--max-steps", "1", "method.out_dim=4"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown setting 'method.out_dim' in override 'method.out_dim=4'" in err


def test_linear_head_flag_and_method_only_means_an_ssl_method(capsys) -> None:
    _name, args, _module = parse_command(
        ["linear-eval", "--checkpoint", "random", "--data", "t", "--head", "sgd"]
    )
    assert args.head == "sgd"
    with pytest.raises(SystemExit):
        parse_command(["linear-eval", "--checkpoint", "random", "--data", "t", "--method", "sgd"])


def test_unknown_method_fails_before_any_work(capsys, tmp_path) -> None:
    out = tmp_path / "run"
    assert (
        main(["pretrain", "--method", "byol", "--data", "phantom", "--max-steps", "1", "--out", str(out)])
        == 2
    )
    assert "unknown method 'byol'" in capsys.readouterr().err
    assert not out.exists()


def test_a_settings_file_is_applied_before_the_overrides(tmp_path, capsys) -> None:
    settings = tmp_path / "mine.yaml"
    settings.write_text(
        "method:\n  head: {out_dim: 128}\n  views: {global_scale: [0.3, 1.0]}\ntrain: {workers: 0}\n"
    )
    argv = [
        "pretrain",
        "--method",
        "dino",
        "--data",
        "phantom",
        "--settings",
        str(settings),
        "train.workers=1",
    ]
    _name, args, _module = parse_command(argv)
    assert args.overrides == [
        "method.head.out_dim=128",
        "method.views.global_scale=[0.3, 1.0]",
        "train.workers=0",
        "train.workers=1",
    ]
    from ssl_radiology.api.pretraining import compose_settings
    from ssl_radiology.commands.pretrain import request_from_args

    args.max_steps = 1
    cfg = compose_settings(request_from_args(args))
    assert cfg.method.head.out_dim == 128 and list(cfg.method.views.global_scale) == [0.3, 1.0]
    assert cfg.train.workers == 1  # the command line wins over the file
    settings.write_text("method: {out_dim: 1}\n")
    assert main([*argv[:-1], "--max-steps", "1"]) == 2
    assert "unknown setting 'method.out_dim'" in capsys.readouterr().err
