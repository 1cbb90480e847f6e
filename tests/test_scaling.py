"""Scaling-grid summary: power-law exponent with a bootstrap CI, and the scaling figure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ssl_radiology.errors import UserError
from ssl_radiology.experiment.scaling import fit_power_law, plot_scaling


def synthetic(exponent: float, a: float, noise: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for n in (100, 1_000, 10_000, 100_000):
        for rep in range(3):
            rows.append(
                {"n_images": n, "replicate": rep, "metric": a * n**exponent * math.exp(rng.normal(0, noise))}
            )
    return pd.DataFrame(rows)


def test_power_law_exponent_is_recovered_and_its_ci_covers_it():
    frame = synthetic(0.08, 0.4, noise=0.02)
    fit = fit_power_law(frame["n_images"], frame["metric"])
    assert fit["exponent"] == pytest.approx(0.08, abs=0.01)
    assert fit["a"] == pytest.approx(0.4, rel=0.1)
    assert fit["ci_low"] < 0.08 < fit["ci_high"] and fit["ci_high"] - fit["ci_low"] < 0.03
    assert fit["n_points"] == 12 and fit["n_sizes"] == 4 and fit["r2"] > 0.9


def test_ci_widens_with_replicate_noise_and_falls_back_without_replicates():
    quiet = fit_power_law(*synthetic(0.05, 0.5, noise=0.01)[["n_images", "metric"]].T.to_numpy())
    noisy = fit_power_law(*synthetic(0.05, 0.5, noise=0.1)[["n_images", "metric"]].T.to_numpy())
    assert quiet["ci_method"] == noisy["ci_method"] == "bootstrap"
    assert noisy["ci_high"] - noisy["ci_low"] > 3 * (quiet["ci_high"] - quiet["ci_low"])
    single = fit_power_law([10, 100, 1000, 10000], [0.50, 0.56, 0.61, 0.69])  # one run per size
    assert single["ci_method"] == "t" and single["ci_low"] < single["exponent"] < single["ci_high"]
    two = fit_power_law([10, 100], [0.5, 0.6])
    assert math.isfinite(two["exponent"]) and two["ci_method"] == "none" and math.isnan(two["ci_low"])


def test_non_positive_metrics_are_refused_with_a_hint():
    with pytest.raises(UserError, match="1 - metric"):
        fit_power_law([10, 100, 1000], [0.5, 0.0, 0.7])


def test_plot_has_one_fit_per_domain_and_model(tmp_path):
    parts = []
    for domain, model, b in [("CT", "vit_tiny", 0.05), ("CT", "vit_small", 0.08), ("CXR", "vit_tiny", 0.03)]:
        parts.append(synthetic(b, 0.5, noise=0.02).assign(domain=domain, model=model))
    frame = pd.concat(parts)
    fits = plot_scaling(frame.to_dict("records"), tmp_path / "scaling.png", metric_label="AUROC")
    assert set(fits) == {"CT / vit_tiny", "CT / vit_small", "CXR / vit_tiny"}
    assert fits["CT / vit_small"]["exponent"] == pytest.approx(0.08, abs=0.01)
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    with pytest.raises(UserError, match="n_images"):
        plot_scaling(frame.drop(columns="n_images"), tmp_path / "x.png")


def test_shipped_scaling_grids_expand_into_replicated_runs_per_domain_model_and_fraction():
    from ssl_radiology.experiment import load_spec

    small = load_spec("scaling_phantom")
    assert len(small.grid) == 2 * 2 * 3  # domains × backbones × fractions
    assert {p.fraction for p in small.grid} == {0.25, 0.5, 1.0} and {p.domain for p in small.grid} == {
        "ct",
        "xray",
    }
    runs = {run.name: run for run in small.pretrain}
    assert all(runs[p.init].seeds == (0, 1) and runs[p.init].fraction == p.fraction for p in small.grid)
    full = load_spec("scaling_full")
    methods = {run.method for run in full.pretrain}
    assert methods == {"dinov2", "supervised"} and len(full.grid) == 2 * 2 * 3
