"""The generated report: declared endpoint first, declared comparisons, health, baselines, secondary table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ssl_radiology.evaluation.results import ResultStore, SeedKey
from ssl_radiology.experiment.cells import expand_cells
from ssl_radiology.experiment.report import write_report
from ssl_radiology.experiment.spec import load_spec

SPEC = """
name: toy
backbone: resnet18
image_size: 32
seeds: [0, 1]
pretrain:
  dino-ct: {method: dino, data: ["phantom:CT"], seeds: [0, 1, 2], args: {max-steps: 1}}
inits:
  dino-ct: {run: dino-ct}
  random: {spec: random}
  pixels: {spec: raw-pixels}
evaluate:
  targets: [phantom-ct]
  protocols: {knn: {}, finetune: {}}
  fractions: [1.0]
baseline: random
comparisons: [[dino-ct, pixels]]
endpoint: {a: dino-ct, b: random, target: phantom-ct, protocol: knn, fraction: 1.0, metric: accuracy}
"""
#: accuracy of each condition per protocol: pre-training beats random in kNN but not raw pixels
QUALITY = {("knn", "dino-ct"): 0.8, ("knn", "random"): 0.45, ("knn", "pixels"): 0.85,
           ("finetune", "dino-ct"): 0.7, ("finetune", "random"): 0.7}  # fmt: skip


def _predictions(accuracy: float, seed: int) -> tuple[dict[str, np.ndarray], float]:
    """300 test images of 100 patients (3 each), 2 classes; correct on about ``accuracy`` of the patients."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.integers(0, 2, 100), 3)
    correct = np.repeat(rng.random(100) < accuracy, 3)
    scores = np.eye(2)[np.where(correct, labels, 1 - labels)]
    patients = np.repeat([f"p{i}" for i in range(100)], 3)
    arrays = {"sample": np.arange(300), "patients": patients, "labels": labels}
    return arrays | {"scores": scores}, float(correct.mean())


def _fill(out: Path) -> None:
    """Result folders for every eval cell, and health.json for the pre-training runs (seed 1 collapsed)."""
    spec = load_spec(str(out / "toy.yaml"))
    for cell in expand_cells(spec, out):
        if cell.stage == "pretrain":
            cell.out.mkdir(parents=True)
            status = "collapsed" if cell.id.endswith("seed-1") else "ok"
            (cell.out / "health.json").write_text(
                json.dumps({"status": status, "loss_start": 6.9, "loss_end": 6.9})
            )
            continue
        if cell.stage != "eval" or (cell.out.parts[-3:-2] == ("pixels",) and "finetune" in cell.id):
            continue
        req = cell.request
        family = "knn" if req.protocol == "knn" else "finetune"
        variant = "knn-k20" if family == "knn" else "finetune"
        store = ResultStore(cell.out)
        pseed = req.pretrain_seed
        for seed in req.seeds:
            arrays, acc = _predictions(QUALITY[(family, req.backbone.name)], 100 * (pseed or 0) + seed)
            arrays[f"scores/{variant}"] = arrays.pop("scores")
            values = {"accuracy": acc}
            if family == "finetune":
                values["converged"] = float(not (req.backbone.name == "random" and seed == 0))
            meta = {"checkpoint": req.backbone.spec, "checkpoint_hash": f"h-{req.backbone.name}-{pseed}",
                    "backbone": "resnet18", "health": "" if pseed is None else ("collapsed" if pseed == 1 else "ok"),
                    "overlap": 0}  # fmt: skip
            key = SeedKey(req.backbone.name, family, "phantom-ct", 1.0, None, seed, pseed)
            store.write(key, meta, {variant: values}, {}, arrays)


def test_report_leads_with_the_declared_endpoint_and_flags_baselines(tmp_path):
    (tmp_path / "toy.yaml").write_text(SPEC)
    _fill(tmp_path)
    spec = load_spec(str(tmp_path / "toy.yaml"))
    text = write_report(spec, tmp_path, [], bootstrap=400).read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Primary endpoint"
    assert sections[1] == "## What the numbers support (generated)"
    endpoint = text.split("## Primary endpoint")[1].split("## ")[0]
    assert "dino-ct: " in endpoint and "n = 3 independent replicate(s)" in endpoint
    assert "The interval excludes 0" in endpoint and "**dino-ct** is better" in endpoint
    assert "Caveat for dino-ct: pre-training collapsed" in endpoint
    assert "## Declared comparisons (one family, Holm-corrected)" in text and "dino-ct − pixels" in text
    assert "no better than raw pixels" in text and "no better than from-scratch" in text
    assert "1 of 3 pre-training runs collapsed" in text
    assert "not converged" in text
    assert "3 × 2" in text  # dino-ct: 3 runs × 2 evaluation draws
    assert (tmp_path / "report" / "comparison.png").is_file()


GRID = """
name: grid
backbone: resnet18
image_size: 32
seeds: [0]
grid: {name: scale, method: dino, data: {ct: "phantom:CT"}, fractions: [0.25, 0.5, 1.0], backbones: [resnet18],
       seeds: [0, 1], args: {max-steps: 1}}
inits:
  random: {spec: random}
evaluate:
  targets: [phantom-ct]
  protocols: {knn: {}}
  fractions: [1.0]
baseline: random
"""


def test_grid_study_gets_a_scaling_plot_and_no_endpoint_is_said(tmp_path):
    (tmp_path / "grid.yaml").write_text(GRID)
    spec = load_spec(str(tmp_path / "grid.yaml"))
    fraction = {point.init: point.fraction for point in spec.grid}
    for cell in expand_cells(spec, tmp_path):
        if cell.stage == "pretrain":
            cell.out.mkdir(parents=True)
            n_images = int(400 * fraction[cell.id.split("/")[1]])
            (cell.out / "pretrain_patients.json").write_text(
                json.dumps({"patients": [], "n_images": n_images})
            )
        elif cell.stage == "eval":
            req = cell.request
            quality = 0.5 + 0.3 * fraction.get(req.backbone.name, 0.0)
            arrays, acc = _predictions(quality, req.pretrain_seed or 0)
            arrays["scores/knn-k20"] = arrays.pop("scores")
            meta = {
                "checkpoint": req.backbone.spec,
                "checkpoint_hash": f"h-{req.backbone.name}-{req.pretrain_seed}",
            }
            key = SeedKey(req.backbone.name, "knn", "phantom-ct", 1.0, None, 0, req.pretrain_seed)
            ResultStore(cell.out).write(key, meta, {"knn-k20": {"accuracy": acc}}, {}, arrays)
    text = write_report(spec, tmp_path, [], bootstrap=200).read_text()
    assert "None declared in the experiment file" in text
    assert "## Scaling" in text and "ct / resnet18: exponent +" in text and "6 runs at 3 sizes" in text
    assert (tmp_path / "report" / "scaling.png").stat().st_size > 1000


def test_a_large_holm_family_gets_enough_resamples_to_reach_alpha():
    from ssl_radiology.experiment.report import SIGNIFICANCE, resamples_for_holm

    assert resamples_for_holm(30, 2000) == 2000  # smallest Holm p 30 · 2/2001 = 0.03 < α: enough
    more = resamples_for_holm(75, 2000)  # 75 · 2/2001 = 0.075 > α: no comparison could ever pass
    assert more > 2000 and 75 * 2 / (more + 1) <= SIGNIFICANCE / 2
