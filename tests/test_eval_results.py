"""Per-seed result files (resume, hash guard) and the comparison table / plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ssl_radiology.cli import main
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.compare import comparison_table, gather, write_outputs
from ssl_radiology.evaluation.results import ResultStore, SeedKey


def _write(out, name, digest, values, protocol="knn-k20", fraction=1.0):
    store = ResultStore(out)
    for seed, value in enumerate(values):
        key = SeedKey(name, "knn", "phantom-ct", fraction, None, seed)
        meta = {"checkpoint": f"/runs/{name}", "checkpoint_hash": digest, "backbone": "resnet18"}
        store.write(key, meta, {protocol: {"accuracy": value}}, {"seed": seed})
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


def test_compare_table_statistics(tmp_path):
    ssl, base = [0.81, 0.83, 0.80, 0.84], [0.78, 0.79, 0.77, 0.80]
    _write(tmp_path / "a", "ssl", "h1", ssl)
    _write(tmp_path / "b", "imagenet", "h2", base)
    table = comparison_table(gather([tmp_path / "a", tmp_path / "b"]), baseline="imagenet")
    row = table[table["name"] == "ssl"].iloc[0]
    assert row["n"] == 4
    assert row["mean"] == pytest.approx(np.mean(ssl))
    assert row["std"] == pytest.approx(np.std(ssl, ddof=1))
    assert row["delta"] == pytest.approx(np.mean(ssl) - np.mean(base))
    assert row["delta_pct"] == pytest.approx(100 * (np.mean(ssl) - np.mean(base)) / np.mean(base))
    assert row["p_welch"] == pytest.approx(scipy_stats.ttest_ind(ssl, base, equal_var=False).pvalue)
    assert np.isnan(table[table["name"] == "imagenet"].iloc[0]["p_welch"])
    paths = write_outputs(table, tmp_path / "cmp")
    assert paths["png"].stat().st_size > 1000
    assert "| ssl | knn-k20 | phantom-ct | 1 | accuracy |" in paths["md"].read_text()


def test_compare_refuses_mixed_hashes_under_one_name(tmp_path, capsys):
    _write(tmp_path / "a", "ssl", "h1", [0.8, 0.81])
    _write(tmp_path / "b", "ssl", "h9", [0.7, 0.71])
    with pytest.raises(UserError, match=r"'ssl' mixes .*h1 .*h9"):
        gather([tmp_path / "a", tmp_path / "b"])
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 2
    assert "mixes results of different checkpoints" in capsys.readouterr().err


def test_compare_cli_writes_table_and_plot(tmp_path, capsys):
    _write(tmp_path / "a", "ssl", "h1", [0.6, 0.62, 0.61, 0.65], fraction=0.1)
    _write(tmp_path / "a", "ssl", "h1", [0.8, 0.82, 0.81, 0.85])
    _write(tmp_path / "b", "random", "h3", [0.5, 0.52, 0.49, 0.5], fraction=0.1)
    _write(tmp_path / "b", "random", "h3", [0.6, 0.62, 0.61, 0.6])
    code = main(
        [
            "compare",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--baseline",
            "random",
            "--out",
            str(tmp_path / "c"),
        ]
    )
    assert code == 0
    assert "baseline: random" in capsys.readouterr().out
    csv = pd.read_csv(tmp_path / "c" / "comparison.csv")
    assert len(csv) == 4 and csv["delta"].notna().sum() == 2
    assert (tmp_path / "c" / "comparison.png").stat().st_size > 1000
    with pytest.raises(UserError, match="baseline 'nope'"):
        comparison_table(gather([tmp_path / "a"]), baseline="nope")
