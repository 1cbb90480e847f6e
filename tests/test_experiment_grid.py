"""The experiment grid: strict schema, expansion into requests, replicates, scaling grids, resume, failure
isolation — with a fake executor (no training)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from ssl_radiology.api.types import AnalyzeRequest, EvalRequest, PretrainRequest
from ssl_radiology.errors import UserError
from ssl_radiology.experiment import expand_cells, load_spec
from ssl_radiology.experiment.runner import run_cells, select

SPEC = """
name: tiny
backbone: resnet18
image_size: 32
seeds: [0, 1]
x-anchor: &short [method.head.out_dim=64]
pretrain:
  dino-ct: {method: dino, data: [phantom], seeds: [0, 1], args: {max-steps: 5}, overrides: *short}
inits:
  dino-ct: {run: dino-ct}
  random: {spec: random}
evaluate:
  targets: [phantom-ct, phantom-xray]
  fractions: [1.0, 0.1]
  protocols:
    knn: {}
    finetune: {fractions: [1.0], overrides: [finetune.epochs=1]}
baseline: random
comparisons: [[dino-ct, random]]
endpoint: {a: dino-ct, b: random, target: phantom-ct, protocol: knn, fraction: 1.0, metric: accuracy}
analyze:
  - {kind: cka, inits: [dino-ct, random], data: phantom-ct}
"""


def write_spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_expansion_into_requests_with_pretraining_replicates(tmp_path: Path) -> None:
    spec = load_spec(str(write_spec(tmp_path)))
    cells = expand_cells(spec, tmp_path / "out")
    stages = [c.stage for c in cells]
    # 2 pretrain replicates; knn: (2 dino replicates + random) x 2 targets x 2 fractions; finetune: 3 x 2 x 1
    assert stages.count("pretrain") == 2
    assert stages.count("eval") == 12 + 6
    assert stages.count("analyze") == 1
    pre = cells[1]
    assert pre.id == "pretrain/dino-ct/seed-1" and isinstance(pre.request, PretrainRequest)
    assert pre.request.seed == 1 and pre.request.max_steps == 5 and pre.request.resume
    assert pre.request.overrides == ("method.head.out_dim=64",)
    assert pre.out == tmp_path / "out" / "pretrain" / "dino-ct" / "seed-1"
    assert pre.command.startswith("ssl-rad pretrain --method dino --data phantom")
    knn = next(c for c in cells if c.id == "eval/knn/dino-ct/seed-1/phantom-ct/frac-0.1")
    assert knn.deps == ("pretrain/dino-ct/seed-1",)
    request = knn.request
    assert isinstance(request, EvalRequest)
    assert request.backbone.spec == str(pre.out) and request.backbone.name == "dino-ct"
    assert request.pretrain_seed == 1 and request.seeds == (0, 1) and request.fraction == 0.1
    rnd = next(c for c in cells if c.id == "eval/finetune/random/phantom-xray/frac-1")
    assert rnd.deps == () and rnd.request.pretrain_seed is None
    assert rnd.request.overrides == ("finetune.epochs=1",)
    analysis = cells[-1]
    assert isinstance(analysis.request, AnalyzeRequest) and analysis.deps == ("pretrain/dino-ct/seed-0",)
    assert spec.comparisons == (("dino-ct", "random"),) and spec.endpoint.metric == "accuracy"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("{run: dino-ct}", "{run: nope}"), "not declared"),
        (("baseline: random", "baseline: imagenet"), "baseline 'imagenet'"),
        (("knn: {}", "svm: {}"), "unknown protocol 'svm'"),
        (("fractions: [1.0, 0.1]", "fractions: [0.0]"), "fractions must be in (0, 1]"),
        (("seeds: [0, 1]", "seeds: []"), "seeds"),
        (("analyze:", "analyse:"), "unknown key 'analyse' (nearest valid key: 'analyze')"),
        (("baseline: random", "baselin: random"), "unknown key 'baselin' (nearest valid key: 'baseline')"),
        (
            ("args: {max-steps: 5}", "args: {max-step: 5}"),
            "unknown key 'max-step' (nearest valid key: 'max-steps')",
        ),
        (("args: {max-steps: 5}", "args: {max-steps: five}"), "max-steps: expected an integer, got 'five'"),
        (("{spec: random}", "{spec: random, sped: 1}"), "unknown key 'sped'"),
        (("[[dino-ct, random]]", "[[dino-ct, rnd]]"), "unknown init 'rnd'"),
        (("fraction: 1.0, metric", "fraction: 0.5, metric"), "does not evaluate that subset"),
        (("image_size: 32", "image_size: -3"), "image_size: must be ≥ 1"),
        (("method: dino", "method: byol"), "unknown method 'byol'"),
        (
            ("[method.head.out_dim=64]", "[method.head.out_dim=-5]"),
            "method.head.out_dim must be a positive integer",
        ),
        (
            ("data: [phantom], seeds", "data: [phantomm], seeds"),
            "unknown data 'phantomm' (nearest valid name: 'phantom')",
        ),
        (
            ("targets: [phantom-ct,", "targets: [phantom-cts,"),
            "unknown task 'phantom-cts' (nearest valid task: 'phantom-ct')",
        ),
        (("args: {max-steps: 5}", "args: {max-steps: 5, batch-size: 0}"), "--batch-size must be ≥ 1"),
        (("args: {max-steps: 5}", "args: {max-steps: 5, seed: 3}"), "'seed' is set by the experiment itself"),
        (("[method.head.out_dim=64]", "[method.out_dim=64]"), "unknown setting 'method.out_dim'"),
        (("[finetune.epochs=1]", "[finetune.epoch=1]"), "unknown setting 'finetune.epoch'"),
    ],
)
def test_bad_specs_name_the_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    text = SPEC.replace(*edit)
    assert text != SPEC
    with pytest.raises(UserError) as info:
        load_spec(str(write_spec(tmp_path, text)))
    assert message in str(info.value)


def test_missing_or_malformed_config_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="experiment config not found"):
        load_spec("no-such-experiment")
    with pytest.raises(UserError, match="not a valid YAML config"):
        load_spec(str(write_spec(tmp_path, "name: [unclosed\nseeds: {a: 1")))


def test_shipped_experiments_load() -> None:
    for name in ("demo", "domain_transfer"):
        spec = load_spec(name)
        assert expand_cells(spec, Path("out"))


def test_raw_pixels_get_no_finetune_cells(tmp_path: Path) -> None:
    text = SPEC.replace("  random: {spec: random}", "  random: {spec: random}\n  pixels: {spec: raw-pixels}")
    ids = [c.id for c in expand_cells(load_spec(str(write_spec(tmp_path, text))), tmp_path / "out")]
    assert "eval/knn/pixels/phantom-ct/frac-1" in ids and not [
        i for i in ids if i.startswith("eval/finetune/pixels")
    ]


def test_scaling_grid_expands_into_runs_and_inits(tmp_path: Path) -> None:
    grid = """
    grid:
      name: scale
      method: dino
      data: {ct: "phantom:CT", xray: "phantom:CR,DX"}
      fractions: [0.1, 1.0]
      backbones: [resnet18, test_vit3]
      seeds: [0, 1]
      args: {max-steps: 5}
    """
    spec = load_spec(str(write_spec(tmp_path, SPEC + textwrap.dedent(grid))))
    assert len(spec.grid) == 2 * 2 * 2
    point = next(
        p for p in spec.grid if p.domain == "xray" and p.backbone == "test_vit3" and p.fraction == 0.1
    )
    assert point.init == "scale-xray-test_vit3-frac0.1" and point.source == "phantom:CR,DX"
    cells = {c.id: c for c in expand_cells(spec, tmp_path / "out")}
    run = cells[f"pretrain/{point.init}/seed-1"].request
    assert run.fraction == 0.1 and run.backbone == "test_vit3" and run.data == ("phantom:CR,DX",)
    assert f"eval/knn/{point.init}/seed-1/phantom-ct/frac-1" in cells


def test_failing_cells_are_recorded_whatever_they_raise(tmp_path: Path) -> None:
    spec = load_spec(str(write_spec(tmp_path)))
    cells = expand_cells(spec, tmp_path / "out")
    calls: list[str] = []

    def failing(request):
        calls.append(type(request).__name__)
        if isinstance(request, PretrainRequest) and request.seed == 0:
            raise SystemExit(2)  # e.g. argparse deep inside a library
        if isinstance(request, EvalRequest) and request.data == "phantom-xray" and request.backbone.is_random:
            raise RuntimeError("boom")
        return None

    outcomes = run_cells(cells, failing)
    states = {o.cell.id: o.state for o in outcomes}
    assert states["pretrain/dino-ct/seed-0"] == "failed"
    assert states["eval/knn/dino-ct/seed-0/phantom-ct/frac-1"] == "blocked"
    assert states["eval/knn/dino-ct/seed-1/phantom-ct/frac-1"] == "done"  # the other replicate ran
    assert states["eval/knn/random/phantom-ct/frac-1"] == "done"
    failed = json.loads((cells[0].out / "cell-failed.json").read_text())
    assert failed["error"] == "exited with status 2" and failed["command"].startswith("ssl-rad pretrain")
    assert states[cells[-1].id] == "blocked"
    assert states["eval/knn/random/phantom-xray/frac-1"] == "failed"
    broken = next(c for c in cells if c.id == "eval/knn/random/phantom-xray/frac-1")
    assert json.loads((broken.out / "cell-failed.json").read_text())["error"] == "RuntimeError: boom"

    calls.clear()
    outcomes = run_cells(cells, lambda request: calls.append(type(request).__name__))
    states = {o.cell.id: o.state for o in outcomes}
    assert states["eval/knn/random/phantom-ct/frac-1"] == "skipped"  # finished before: not redone
    assert states["pretrain/dino-ct/seed-0"] == "done"
    assert not (cells[0].out / "cell-failed.json").exists()
    assert calls.count("PretrainRequest") == 1 and "AnalyzeRequest" in calls


def test_keyboard_interrupt_stops_the_study(tmp_path: Path) -> None:
    cells = expand_cells(load_spec(str(write_spec(tmp_path))), tmp_path / "out")

    def interrupted(request):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cells(cells, interrupted)
    assert not (cells[0].out / "cell-failed.json").exists()


def test_changed_settings_make_a_cell_stale_but_a_moved_folder_does_not(tmp_path: Path, monkeypatch) -> None:
    spec = load_spec(str(write_spec(tmp_path)))
    cells = expand_cells(spec, tmp_path / "out")
    run_cells(cells, lambda request: None)
    assert all(c.state() == "done" for c in cells)
    edited = load_spec(str(write_spec(tmp_path)), ["pretrain.dino-ct.args.max-steps=10"])
    states = {c.id: c.state() for c in expand_cells(edited, tmp_path / "out")}
    assert (
        states["pretrain/dino-ct/seed-0"] == "stale" and states["eval/knn/random/phantom-ct/frac-1"] == "done"
    )
    shutil.move(tmp_path / "out", tmp_path / "moved")
    assert all(c.state() == "done" for c in expand_cells(spec, tmp_path / "moved"))
    monkeypatch.chdir(tmp_path)  # the same folder named by a relative path
    assert all(c.state() == "done" for c in expand_cells(spec, Path("moved")))


def test_only_pattern_pulls_in_dependencies(tmp_path: Path) -> None:
    cells = expand_cells(load_spec(str(write_spec(tmp_path))), tmp_path / "out")
    chosen = [c.id for c in select(cells, "eval/knn/dino-ct/seed-0/phantom-ct/*")]
    assert chosen[0] == "pretrain/dino-ct/seed-0" and len(chosen) == 3
    with pytest.raises(UserError, match="matches no cell"):
        select(cells, "nothing/*")


def test_a_small_study_runs_through_the_api_and_survives_a_broken_cell(tmp_path: Path, monkeypatch) -> None:
    """Two tiny pre-training replicates and random weights, kNN on the tiny phantom, plus a target that does
    not exist: that cell is recorded as failed, the others run, rows carry their pre-training seed, the
    report is written, and a second run redoes only the failed cell."""
    import pandas as pd
    from conftest import TINY_PHANTOM, copy_configs

    from ssl_radiology.experiment import run_experiment

    monkeypatch.setenv("SSL_RAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSL_RAD_CONFIGS", str(copy_configs(tmp_path / "configs", {"phantom": TINY_PHANTOM})))
    monkeypatch.delenv("NIH_CXR14_ROOT", raising=False)  # the nih-cxr14 cells fail: no data here
    study = """
    name: small
    backbone: vit_tiny_patch16_224
    image_size: 32
    seeds: [0, 1]
    pretrain:
      dino:
        method: dino
        data: ["phantom:CT"]
        seeds: [0, 1]
        args: {max-steps: 1, batch-size: 4, workers: 0, accelerator: cpu}
        overrides: [method.head.out_dim=32, method.head.hidden_dim=16, method.head.bottleneck_dim=8, method.views.n_local=0]
    inits: {dino: {run: dino}, random: {spec: random}}
    evaluate:
      targets: [phantom-ct, nih-cxr14]
      protocols: {knn: {overrides: [workers=0, bootstrap=0]}}
      args: {allow-overlap: true}  # pre-trained on the task's own patients: recorded, not refused
    baseline: random
    """
    spec = load_spec(str(write_spec(tmp_path, study)))
    out = tmp_path / "study"
    states = {o.cell.id: o.state for o in run_experiment(spec, out)}
    assert states["eval/knn/random/nih-cxr14/frac-1"] == "failed"
    assert states["eval/knn/dino/seed-1/nih-cxr14/frac-1"] == "failed"
    assert [k for k, v in states.items() if v != "done"] == [k for k in states if "nih-cxr14" in k]
    failed = json.loads((out / "eval/knn/random/nih-cxr14/frac-1/cell-failed.json").read_text())
    assert "nih-cxr14" in failed["error"]
    rows = pd.read_csv(out / "eval/knn/dino/seed-1/phantom-ct/frac-1/results.csv")
    assert set(rows["pretrain_seed"]) == {1} and set(rows["seed"]) == {0, 1}
    assert (rows["overlap"] > 0).all()  # the leakage guard's count travels into every row
    assert (out / "pretrain/dino/seed-1/backbone.safetensors").is_file()
    assert (out / "report.md").is_file() and (out / "experiment.yaml").is_file()
    again = {o.cell.id: o.state for o in run_experiment(spec, out)}
    assert (
        again["eval/knn/random/phantom-ct/frac-1"] == "skipped" and again["pretrain/dino/seed-0"] == "skipped"
    )
    assert again["eval/knn/random/nih-cxr14/frac-1"] == "failed"


def test_continued_pretraining_from_a_run_of_the_study(tmp_path: Path) -> None:
    text = SPEC.replace(
        "\ninits:",
        "\n  dino-more: {method: dino, data: [phantom], seeds: [1], init: dino-ct, args: {max-steps: 5}}\n"
        "  from-in: {method: dino, data: [phantom], init: 'imagenet:dino', args: {max-steps: 5}}\ninits:",
    )
    cells = {c.id: c for c in expand_cells(load_spec(str(write_spec(tmp_path, text))), tmp_path / "out")}
    more = cells["pretrain/dino-more/seed-1"]
    assert more.deps == ("pretrain/dino-ct/seed-1",)
    assert more.request.init == str(cells["pretrain/dino-ct/seed-1"].out)
    assert cells["pretrain/from-in/seed-0"].request.init == "imagenet:dino"
    backwards = SPEC.replace("  dino-ct: {method", "  dino-ct: {init: later, method").replace(
        "\ninits:", "\n  later: {method: dino, data: [phantom], args: {max-steps: 1}}\ninits:"
    )
    with pytest.raises(UserError, match="must be declared before"):
        load_spec(str(write_spec(tmp_path, backwards)))
