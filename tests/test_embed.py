"""``ssl-rad embed``: features with keys to Parquet / NPY, and the same kNN score as ``ssl-rad knn``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from test_analyze_cli import BACKBONE, corpus  # noqa: F401  (module fixture: the tiny corpus)

from ssl_radiology.cli import main
from ssl_radiology.features.knn import knn_probabilities


def test_embedded_features_reproduce_the_knn_score(corpus, tmp_path):  # noqa: F811
    out = tmp_path / "emb.parquet"
    spec = f"imagenet:{corpus.imagenet}"
    common = ["--checkpoint", spec, "--backbone", BACKBONE, "--data", str(corpus.task), "--image-size", "32"]
    embed_cache = ["--feature-cache", str(tmp_path / "embed-cache")]
    assert main(["embed", *common, "--out", str(out), "--patch-tokens", *embed_cache, "workers=0"]) == 0
    eval_cache = ["--feature-cache", str(tmp_path / "eval-cache")]  # computed again, not read back
    argv = ["knn", *common, "--seeds", "0", "--out", str(tmp_path / "eval"), *eval_cache, "workers=0"]
    assert main([*argv, "bootstrap=0"]) == 0

    table = pq.read_table(out)
    meta = json.loads(table.schema.metadata[b"ssl_radiology"])
    frame = table.to_pandas()
    features = np.stack(frame["features"].to_numpy())
    tokens = np.stack(frame["patch_tokens"].to_numpy()).reshape(len(frame), *meta["patch_shape"])
    assert features.shape == (len(frame), meta["feature_dim"]) and features.dtype == np.float32
    assert meta["patch_shape"][1] == meta["feature_dim"]  # a CNN's final map: H·W tokens of C channels
    np.testing.assert_allclose(tokens.mean(axis=1), features, rtol=1e-4, atol=1e-5)  # CNN pooling = mean
    assert {"row", "file_key", "patient_key", "split", "label", "label_name"} <= set(frame.columns)
    assert "source" not in frame.columns

    bank = frame["split"].isin(["train", "val"]).to_numpy()
    query = (frame["split"] == "test").to_numpy()
    labels = frame["label"].to_numpy()
    n_classes = frame["label"].max() + 1
    probs = knn_probabilities(
        features[bank], labels[bank], features[query], "multiclass", n_classes, ks=(20,)
    )
    accuracy = float(np.mean(probs[20].argmax(axis=1) == labels[query]))

    cached = {p.name: np.load(p) for p in (tmp_path / "eval-cache").glob("*.npy")}
    assert [p.name for p in (tmp_path / "embed-cache").glob("*.npy")] == list(cached)  # one shared cache key
    np.testing.assert_array_equal(features, next(iter(cached.values())))
    rows = pd.read_csv(tmp_path / "eval" / "results.csv")
    reported = rows[(rows["protocol"] == "knn-k20") & (rows["metric"] == "accuracy")]["value"].item()
    assert accuracy == pytest.approx(reported, abs=1e-12)


def test_npy_output_of_a_source_with_vit_patch_tokens(corpus, tmp_path):  # noqa: F811
    out = tmp_path / "phantom.npy"
    argv = [
        "embed", "--checkpoint", "random", "--backbone", "test_vit3", "--data", f"{corpus.phantom}:CT",
        "--image-size", "32", "--out", str(out), "--patch-tokens", "--feature-cache", str(tmp_path / "c"),
        "workers=0",
    ]  # fmt: skip
    assert main(argv) == 0
    features, tokens = np.load(out), np.load(tmp_path / "phantom.patch_tokens.npy")
    keys = pd.read_csv(tmp_path / "phantom.keys.csv")
    meta = json.loads((tmp_path / "phantom.json").read_text())
    assert len(features) == len(tokens) == len(keys) and set(keys["modality"]) == {"CT"}
    assert tokens.shape[1:] == (4, features.shape[1]) == tuple(meta["patch_shape"])  # (32 / 16)², no CLS
    assert {"file_key", "slice_index", "patient_key"} <= set(keys.columns)
    assert not {"split", "label", "source"} & set(keys.columns)
    assert meta["checkpoint_hash"] == "random-test_vit3-seed0" and meta["image_size"] == 32


def test_unsupported_output_is_refused_before_any_work(corpus, tmp_path, capsys):  # noqa: F811
    argv = [
        "embed",
        "--checkpoint",
        "random",
        "--data",
        str(corpus.phantom),
        "--out",
        str(tmp_path / "x.txt"),
    ]
    assert main(argv) == 2
    assert "write .parquet or .npy" in capsys.readouterr().err
