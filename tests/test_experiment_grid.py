"""The experiment grid: expansion, validation, resume, failure isolation — with a fake command executor."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ssl_radiology.errors import UserError
from ssl_radiology.experiment import expand_cells, load_spec
from ssl_radiology.experiment.runner import run_cells, select

SPEC = """
name: tiny
backbone: resnet18
image_size: 32
seeds: [0, 1]
pretrain:
  dino-ct: {method: dino, data: [phantom], args: {max-steps: 5}, overrides: [method.out_dim=64]}
inits:
  dino-ct: {run: dino-ct}
  random: {spec: random}
evaluate:
  targets: [phantom-ct, phantom-xray]
  fractions: [1.0, 0.1]
  protocols:
    knn: {}
    finetune: {fractions: [1.0], args: {epochs: 1}}
baseline: random
analyze:
  - {kind: cka, inits: [dino-ct, random], data: phantom-ct}
"""


def write_spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_expansion_counts_and_command_lines(tmp_path: Path) -> None:
    spec = load_spec(str(write_spec(tmp_path)))
    cells = expand_cells(spec, tmp_path / "out")
    stages = [c.stage for c in cells]
    # 1 pretrain; knn: 2 inits x 2 targets x 2 fractions; finetune: 2 x 2 x 1; 1 analysis
    assert stages.count("pretrain") == 1
    assert stages.count("eval") == 8 + 4
    assert stages.count("analyze") == 1
    pre = cells[0]
    assert pre.argv[:3] == ("pretrain", "--method", "dino")
    assert "--max-steps" in pre.argv and "method.out_dim=64" in pre.argv
    knn = next(c for c in cells if c.id == "eval/knn/dino-ct/phantom-ct/frac-0.1")
    assert knn.deps == ("pretrain/dino-ct",)
    argv = list(knn.argv)
    assert argv[argv.index("--checkpoint") + 1] == str(tmp_path / "out" / "pretrain" / "dino-ct")
    assert argv[argv.index("--seeds") + 1] == "0,1"
    assert argv[argv.index("--fraction") + 1] == "0.1"
    rnd = next(c for c in cells if c.id == "eval/finetune/random/phantom-xray/frac-1")
    assert rnd.deps == () and "--epochs" in rnd.argv


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("{run: dino-ct}", "{run: nope}"), "not declared"),
        (("baseline: random", "baseline: imagenet"), "baseline 'imagenet'"),
        (("knn: {}", "svm: {}"), "unknown protocol 'svm'"),
        (("fractions: [1.0, 0.1]", "fractions: [0.0]"), "fractions must be in (0, 1]"),
        (("seeds: [0, 1]", "seeds: []"), "seeds"),
    ],
)
def test_bad_specs_name_the_setting(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    path = write_spec(tmp_path, SPEC.replace(*edit))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_spec(str(path))


def test_missing_config_is_a_user_error() -> None:
    with pytest.raises(UserError, match="experiment config not found"):
        load_spec("no-such-experiment")


def test_failed_cell_blocks_dependents_and_resume_skips_done(tmp_path: Path) -> None:
    spec = load_spec(str(write_spec(tmp_path)))
    cells = expand_cells(spec, tmp_path / "out")
    calls: list[str] = []

    def failing_pretrain(argv):
        calls.append(argv[0])
        if argv[0] == "pretrain":
            raise RuntimeError("boom")
        return 0

    outcomes = run_cells(cells, failing_pretrain)
    states = {o.cell.id: o.state for o in outcomes}
    assert states["pretrain/dino-ct"] == "failed"
    assert states["eval/knn/dino-ct/phantom-ct/frac-1"] == "blocked"
    assert states["eval/knn/random/phantom-ct/frac-1"] == "done"  # independent cells still ran
    assert (cells[0].out / "cell-failed.json").is_file()

    calls.clear()
    outcomes = run_cells(cells, lambda argv: calls.append(argv[0]) or 0)
    states = {o.cell.id: o.state for o in outcomes}
    assert states["eval/knn/random/phantom-ct/frac-1"] == "skipped"  # finished before: not redone
    assert states["pretrain/dino-ct"] == "done"
    assert not (cells[0].out / "cell-failed.json").exists()
    assert calls.count("pretrain") == 1 and "knn" in calls


def test_changed_command_line_makes_a_cell_stale(tmp_path: Path) -> None:
    spec = load_spec(str(write_spec(tmp_path)))
    cells = expand_cells(spec, tmp_path / "out")
    run_cells(cells[:1], lambda argv: 0)
    assert cells[0].state() == "done"
    edited = load_spec(str(write_spec(tmp_path)), ["pretrain.dino-ct.args.max-steps=10"])
    assert expand_cells(edited, tmp_path / "out")[0].state() == "stale"


def test_only_pattern_pulls_in_dependencies(tmp_path: Path) -> None:
    cells = expand_cells(load_spec(str(write_spec(tmp_path))), tmp_path / "out")
    chosen = [c.id for c in select(cells, "eval/knn/dino-ct/phantom-ct/*")]
    assert chosen[0] == "pretrain/dino-ct" and len(chosen) == 3
    with pytest.raises(UserError, match="matches no cell"):
        select(cells, "nothing/*")
