"""The built-in study (demo.yaml, phantom_study.yaml) is a fair comparison by construction.

Checked from the shipped YAMLs alone (nothing is generated or trained): pre-training and evaluation read
different phantom patients; in-domain and cross-domain pre-training see as many images for as many steps;
every condition has ≥ 3 pre-training replicates; the primary endpoint is declared; raw-pixel, random and
from-scratch baselines are evaluated; a protocol's ``inits`` / ``targets`` restrict its cells.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ssl_radiology.config import load_group
from ssl_radiology.data.phantom import ct_slice_count
from ssl_radiology.data.sources import split_selector
from ssl_radiology.errors import UserError
from ssl_radiology.experiment import expand_cells, load_spec

STUDIES = ["demo", "phantom_study"]


def _case_range(name: str) -> range:
    cfg = load_group("data", name)
    first = int(cfg.get("first_case", 0))
    return range(first, first + int(cfg.cases))


def test_pretraining_phantom_holds_other_patients_than_the_evaluation_phantom() -> None:
    pretrain, evaluation = load_group("data", "phantom-pretrain"), load_group("data", "phantom")
    assert int(pretrain.seed) == int(evaluation.seed)  # same generator: case i is patient (seed, i) ...
    assert not set(_case_range("phantom-pretrain")) & set(_case_range("phantom"))  # ... other cases
    assert int(evaluation.cases) * 0.25 >= 50 and int(evaluation.cases) >= 300  # test patients, radiographs
    for task in ("phantom-ct", "phantom-ct-nodule", "phantom-xray"):
        assert load_group("eval/tasks", task).source == "phantom"


def test_in_domain_and_cross_domain_corpora_have_as_many_images() -> None:
    pretrain, natural = load_group("data", "phantom-pretrain"), load_group("data", "natural")
    assert int(pretrain.cases) * ct_slice_count(int(pretrain.ct_size)) == int(natural.count)


@pytest.mark.parametrize("name", STUDIES)
def test_study_declares_replicates_endpoint_and_baselines(name: str, tmp_path: Path) -> None:
    spec = load_spec(name)
    runs = {run.name: run for run in spec.pretrain}
    assert all(len(run.seeds) >= 3 for run in runs.values())
    ct, natural = runs["simclr-ct"], runs["simclr-natural"]
    assert [split_selector(d)[0] for d in ct.data] == ["phantom-pretrain"]
    assert list(natural.data) == ["natural"]
    # matched optimizer steps and recipe: only the data differ
    assert (ct.method, ct.args, ct.overrides, ct.seeds) == (
        natural.method,
        natural.args,
        natural.overrides,
        natural.seeds,
    )
    endpoint = spec.endpoint
    assert endpoint is not None
    assert (endpoint.a, endpoint.b, endpoint.target, endpoint.protocol) == (
        "simclr-ct",
        "simclr-natural",
        "phantom-ct",
        "knn",
    )
    specs = {init.name: init.spec for init in spec.inits}
    assert specs["random"] == "random" and specs["raw-pixels"] == "raw-pixels"
    assert ("simclr-ct", "simclr-natural") in spec.comparisons
    cells = expand_cells(spec, tmp_path)
    finetuned = {c.id.split("/")[2] for c in cells if c.id.startswith("eval/finetune/")}
    assert "random" in finetuned and "raw-pixels" not in finetuned  # from scratch; pixels have no weights
    assert any(c.id.startswith("eval/knn/raw-pixels/") for c in cells)


SPEC = """\
name: tiny
backbone: test_resnet
image_size: 32
seeds: [0]
inits:
  random: {spec: random}
  raw-pixels: {spec: raw-pixels}
evaluate:
  targets: [phantom-ct, phantom-xray]
  protocols:
    knn: {}
    finetune: {inits: [random], targets: [phantom-ct]}
baseline: random
"""


def test_protocol_inits_and_targets_restrict_its_cells(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPEC)
    cells = [c.id for c in expand_cells(load_spec(str(path)), tmp_path / "out")]
    assert sorted(c for c in cells if c.startswith("eval/finetune/")) == [
        "eval/finetune/random/phantom-ct/frac-1"
    ]
    assert len([c for c in cells if c.startswith("eval/knn/")]) == 4  # 2 inits × 2 targets
    path.write_text(SPEC.replace("inits: [random]", "inits: [scratch]"))
    with pytest.raises(UserError, match=r"protocols\.finetune\.inits: scratch not declared"):
        load_spec(str(path))
    path.write_text(
        SPEC
        + textwrap.dedent(
            """\
            endpoint: {a: raw-pixels, b: random, target: phantom-ct, protocol: finetune, fraction: 1.0,
                       metric: accuracy}
            """
        )
    )
    with pytest.raises(UserError, match="does not evaluate raw-pixels"):
        load_spec(str(path))


def test_leakage_guard_verifies_the_separation_on_the_phantom(tmp_path: Path, monkeypatch) -> None:
    """Keys recorded by pre-training on ``phantom-pretrain`` share no test patient of a phantom task; keys of
    the evaluation cohort itself are caught (the task's patients are the prepared images' patient keys)."""
    from conftest import TINY_PHANTOM, copy_configs

    from ssl_radiology.data.sources import open_source
    from ssl_radiology.evaluation.leakage import check_overlap
    from ssl_radiology.evaluation.tasks import load_task

    pretrain = TINY_PHANTOM.replace("cases: 8", "cases: 2\nfirst_case: 100000")
    monkeypatch.setenv("SSL_RAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(
        "SSL_RAD_CONFIGS",
        str(copy_configs(tmp_path / "configs", {"phantom": TINY_PHANTOM, "phantom-pretrain": pretrain})),
    )
    task = load_task("phantom-ct", 32)
    for source, shared in (("phantom-pretrain:CT", 0), ("phantom:CT", 2)):
        run = tmp_path / source.split(":")[0]
        run.mkdir()
        keys = sorted(set(open_source(source).manifest["patient_key"]))
        (run / "pretrain_patients.json").write_text(json.dumps({"patients": keys, "n_images": 1}))
        if shared:
            with pytest.raises(UserError, match=f"{shared} of the {shared} test patients"):
                check_overlap(run, "phantom-ct", task.split, task.patients)
        else:
            assert check_overlap(run, "phantom-ct", task.split, task.patients) == 0
