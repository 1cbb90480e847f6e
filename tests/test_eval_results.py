"""Per-seed result files (resume, hash guard, stored predictions) and the comparison table / plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ssl_radiology.cli import main
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.compare import comparison_table, display_frame, gather, write_outputs
from ssl_radiology.evaluation.results import ResultStore, SeedKey, read_predictions


def _predictions(correct: np.ndarray) -> dict[str, np.ndarray]:
    """Stored arrays of a 2-class task whose images are right where ``correct`` says (3 images a patient)."""
    n = len(correct)
    labels = np.arange(n) % 2
    scores = np.eye(2)[np.where(correct, labels, 1 - labels)]
    patients = np.array([f"p{i // 3}" for i in range(n)])
    return {"sample": np.arange(n), "patients": patients, "labels": labels, "scores/knn-k20": scores}


def _write(
    out, name, digest, values, fraction=1.0, pretrain_seed=None, checkpoint=None, correct=None, **meta
):
    store = ResultStore(out)
    for seed, value in enumerate(values):
        key = SeedKey(name, "knn", "phantom-ct", fraction, None, seed, pretrain_seed)
        row_meta = {
            "checkpoint": checkpoint or f"/runs/{name}",
            "checkpoint_hash": digest,
            "backbone": "resnet18",
        }
        preds = None if correct is None else _predictions(correct[seed])
        store.write(key, {**row_meta, **meta}, {"knn-k20": {"accuracy": value}}, {"seed": seed}, preds)
    return store


def test_store_resume_and_hash_guard(tmp_path):
    store = _write(tmp_path / "a", "ssl", "h1", [0.8, 0.82])
    key = SeedKey("ssl", "knn", "phantom-ct", 1.0, None, 0)
    assert store.done(key, "h1")
    assert not store.done(SeedKey("ssl", "knn", "phantom-ct", 1.0, None, 5), "h1")
    with pytest.raises(UserError, match=r"checkpoint h1.*hashes to h2"):
        store.done(key, "h2")
    table = pd.read_csv(tmp_path / "a" / "results.csv")
    assert table["value"].tolist() == [0.8, 0.82] and set(table["checkpoint_hash"]) == {"h1"}
    assert not store.done(SeedKey("ssl", "knn", "phantom-ct", 1.0, None, 0, pretrain_seed=1), "h7")


def test_rows_carry_provenance_and_predictions(tmp_path):
    correct = np.ones((1, 12), bool)
    _write(
        tmp_path / "a", "ssl", "h1", [1.0], pretrain_seed=2, correct=correct, health="collapsed", overlap=3
    )
    rows = gather([tmp_path / "a"])
    row = rows.iloc[0]
    assert row["pretrain_seed"] == 2 and row["health"] == "collapsed" and row["overlap"] == 3
    assert row["unit"] == "run2"
    pred = read_predictions(row["predictions"], "knn-k20")
    assert pred.scores.shape == (12, 2) and pred.patients[3] == "p1"
    csv_rows = gather([tmp_path / "a" / "results.csv"])  # the csv finds the same prediction files
    assert csv_rows.iloc[0]["predictions"] == row["predictions"]


def test_replicates_are_pretraining_runs_not_eval_seeds(tmp_path):
    # 3 pre-training runs × 2 eval seeds against a fixed checkpoint evaluated 4 times
    runs = {0: [0.80, 0.82], 1: [0.84, 0.86], 2: [0.78, 0.80]}
    for run, values in runs.items():
        _write(tmp_path / f"r{run}", "ssl", f"h{run}", values, pretrain_seed=run)
    _write(tmp_path / "b", "imagenet", "hb", [0.79, 0.79, 0.79, 0.79], checkpoint="imagenet")
    _write(tmp_path / "c", "random", "random-resnet18", [0.6, 0.65, 0.62, 0.7], checkpoint="random")
    rows = gather([tmp_path / f"r{r}" for r in runs] + [tmp_path / "b", tmp_path / "c"])
    table = comparison_table(rows, baseline="imagenet").set_index("name")
    run_means = [np.mean(v) for v in runs.values()]
    ssl = table.loc["ssl"]
    assert ssl["n"] == 3 and ssl["n_draws"] == 2
    assert ssl["mean"] == pytest.approx(np.mean(run_means))
    assert ssl["std"] == pytest.approx(np.std(run_means, ddof=1))
    low, high = scipy_stats.t.interval(0.95, df=2, loc=np.mean(run_means), scale=scipy_stats.sem(run_means))
    assert (ssl["ci_low"], ssl["ci_high"]) == pytest.approx((low, high))
    assert ssl["delta"] == pytest.approx(np.mean(run_means) - 0.79)
    assert np.isnan(ssl["p_welch"]) and ssl["test_note"].startswith(
        "no test"
    )  # imagenet: one fixed checkpoint
    assert table.loc["imagenet", "n"] == 1 and np.isnan(table.loc["imagenet", "std"])
    assert table.loc["random", "n"] == 4  # random weights are redrawn per seed: each seed is a replicate
    frame = display_frame(table.reset_index())
    assert "no test" in " ".join(frame["Welch on runs"])


def test_paired_bootstrap_in_the_table_and_holm(tmp_path):
    rng = np.random.default_rng(0)
    same = rng.random((2, 60)) < 0.7
    better = same | (rng.random((2, 60)) < 0.6)
    _write(tmp_path / "a", "copy", "h1", same.mean(1), checkpoint="x", correct=same)
    _write(tmp_path / "b", "base", "h2", same.mean(1), checkpoint="y", correct=same)
    _write(tmp_path / "c", "good", "h3", better.mean(1), checkpoint="z", correct=better)
    table = comparison_table(gather([tmp_path / p for p in "abc"]), baseline="base", bootstrap=500)
    table = table.set_index("name")
    assert table.loc["copy", "delta_low"] == 0 and table.loc["copy", "delta_high"] == 0
    assert table.loc["copy", "p_boot"] == pytest.approx(1.0)
    assert table.loc["good", "delta_low"] > 0 and table.loc["good", "p_boot"] < 0.01
    assert table.loc["good", "p_holm"] == pytest.approx(min(1.0, 2 * table.loc["good", "p_boot"]))
    assert table.loc["base", "boot_low"] < table.loc["base", "mean"] < table.loc["base", "boot_high"]


def test_gather_refuses_mixed_hashes_within_one_replicate(tmp_path, capsys):
    _write(tmp_path / "a", "ssl", "h1", [0.8, 0.81])
    _write(tmp_path / "b", "ssl", "h9", [0.7, 0.71])
    with pytest.raises(UserError, match=r"'ssl' mixes .*h1 .*h9"):
        gather([tmp_path / "a", tmp_path / "b"])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 2
    assert "mixes results of different checkpoints" in capsys.readouterr().err
    _write(tmp_path / "d", "run", "h1", [0.8], pretrain_seed=0)
    _write(tmp_path / "e", "run", "h2", [0.7], pretrain_seed=1)
    assert gather([tmp_path / "d", tmp_path / "e"])["unit"].nunique() == 2


def test_compare_cli_writes_table_and_plot(tmp_path, capsys):
    _write(tmp_path / "a", "ssl", "h1", [0.6, 0.62, 0.61, 0.65], fraction=0.1)
    _write(tmp_path / "a", "ssl", "h1", [0.8, 0.82, 0.81, 0.85])
    _write(tmp_path / "b", "random", "h3", [0.5, 0.52, 0.49, 0.5], fraction=0.1, checkpoint="random")
    _write(tmp_path / "b", "random", "h3", [0.6, 0.62, 0.61, 0.6], checkpoint="random")
    argv = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--baseline", "random", "--out"]
    assert main([*argv, str(tmp_path / "c")]) == 0
    assert "baseline: random" in capsys.readouterr().out
    csv = pd.read_csv(tmp_path / "c" / "comparison.csv")
    assert len(csv) == 4 and csv["delta"].notna().sum() == 2
    assert (tmp_path / "c" / "comparison.png").stat().st_size > 1000
    assert "| ssl | knn-k20 | phantom-ct | 1 | accuracy |" in (tmp_path / "c" / "comparison.md").read_text()
    paths = write_outputs(comparison_table(gather([tmp_path / "a"]), None), tmp_path / "d")
    assert paths["png"].stat().st_size > 1000
    with pytest.raises(UserError, match="baseline 'nope'"):
        comparison_table(gather([tmp_path / "a"]), baseline="nope")


def test_a_damaged_seed_file_is_one_clear_error_naming_it(tmp_path, capsys):
    seeds = tmp_path / "res" / "seeds"
    seeds.mkdir(parents=True)
    (seeds / "broken.json").write_text("{not json")
    assert main(["compare", str(tmp_path / "res"), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "broken.json: unreadable result file" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1
