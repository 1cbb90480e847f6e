"""``ssl-rad analyze {cka,knn,umap,domains}`` end to end on a tiny phantom + natural-photo corpus.

The corpus (8 phantom cases at 32 px, 24 natural crops) is written once per test session under pytest's base
temporary folder and shared with ``test_notebooks.py``, as is ``SSL_RAD_CACHE`` (the feature cache); numba's
compiled UMAP kernels go to the user cache unless ``NUMBA_CACHE_DIR`` is set. Patient / file keys use a fixed
``SSL_RAD_KEY`` (``TEST_KEY``), so the session's corpus never depends on the user's installation key.
Checkpoints: ``random`` and an ImageNet-format file saved from a random 3-channel timm model, so nothing is
downloaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from filelock import FileLock
from safetensors.torch import save_file

from ssl_radiology.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BACKBONE = "test_resnet"  # timm's 96-feature ResNet for tests: Fréchet distances stay cheap
USER_NUMBA_CACHE = Path.home() / ".cache" / "ssl-radiology" / "numba"
TEST_KEY = "ssl-radiology tests"  # $SSL_RAD_KEY while the tiny corpus is built and read


@dataclass(frozen=True)
class TinyCorpus:
    root: Path
    phantom: Path  # prepared: CT slices + CR/DX X-rays
    natural: Path  # prepared: natural photo crops (modality OT)
    task: Path  # task YAML: CT body region on the tiny phantom
    imagenet: Path  # timm-format 3-channel weights of BACKBONE
    cache: Path  # SSL_RAD_CACHE


def tiny_corpus(base: Path) -> TinyCorpus:
    """Build (once per session, under a lock) the tiny prepared sources, task and checkpoint file.

    Callers set ``SSL_RAD_KEY=TEST_KEY`` first: the keys of the prepared corpus are HMACs of that secret."""
    from ssl_radiology.data.natural import write_natural_crops
    from ssl_radiology.data.phantom import generate_phantom
    from ssl_radiology.data.prepare import prepare_dataset

    root = base / "analyze-corpus"
    root.mkdir(exist_ok=True)
    corpus = TinyCorpus(
        root,
        root / "phantom",
        root / "natural",
        root / "tiny-ct.yaml",
        root / "in1k.safetensors",
        root / "cache",
    )
    with FileLock(str(root / ".lock")):
        if corpus.imagenet.is_file():
            return corpus
        generate_phantom(root / "phantom-raw", cases=8, seed=0, ct_size=32, xray_size=32)
        prepare_dataset(root / "phantom-raw", corpus.phantom, image_size=32, workers=0, progress=False)
        write_natural_crops(root / "natural-raw", count=24, seed=0)
        prepare_dataset(
            root / "natural-raw", corpus.natural, image_size=32, workers=0, modality="OT", progress=False
        )
        corpus.task.write_text(
            f"adapter: phantom\nsource: {corpus.phantom}\nlabels_csv: ct_slices.csv\nmodality: CT\n"
            "target: region\ntest_fraction: 0.25\n"
        )
        torch.manual_seed(0)
        rgb = timm.create_model(BACKBONE, num_classes=0, in_chans=3)
        save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, corpus.imagenet)
    return corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_RAD_KEY", TEST_KEY)
        built = tiny_corpus(tmp_path_factory.getbasetemp())
        patch.setenv("SSL_RAD_CACHE", str(built.cache))
        # UMAP's numba kernels take ~30 s of CPU to compile: keep them where later runs find them.
        patch.setenv("NUMBA_CACHE_DIR", os.environ.get("NUMBA_CACHE_DIR", str(USER_NUMBA_CACHE)))
        yield built


def analyze(corpus: TinyCorpus, kind: str, out: Path, *extra: str) -> int:
    return main(
        [
            "analyze", kind, "--checkpoint", "random", "--name", "random",
            "--checkpoint", f"imagenet:{corpus.imagenet}", "--name", "imagenet",
            "--backbone", BACKBONE, "--image-size", "32", "--out", str(out), "--set", "workers=0", *extra,
        ]
    )  # fmt: skip


def sources(corpus: TinyCorpus) -> list[str]:
    return ["--data", str(corpus.phantom), "--data", str(corpus.natural), "--max-samples", "16"]


def read(path: Path) -> dict:
    payload = json.loads(path.read_text())
    assert isinstance(payload["caption"], str) and payload["caption"]
    return payload


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_cka_heatmap_and_pairwise_final_cka(corpus, tmp_path):
    extra = ["--checkpoint", "random", "--name", "random again", *sources(corpus)]
    assert analyze(corpus, "cka", tmp_path, *extra) == 0
    payload = read(tmp_path / "cka.json")
    assert payload["layers_x"] == ["layer1", "layer2", "layer3", "layer4"] == payload["layers_y"]
    matrix = np.array(payload["matrix"])
    assert matrix.shape == (4, 4) and np.all(matrix <= 1 + 1e-9)
    assert payload["domains"] == {"CT slices": 16, "X-ray": 8, "natural": 16}  # only 8 X-rays exist
    assert is_png(tmp_path / "cka_random_vs_imagenet.png")
    pairs = {(p["a"], p["b"]): p["linear_cka"] for p in payload["final_features"]}
    assert set(pairs) == {("random", "imagenet"), ("random", "random again"), ("imagenet", "random again")}
    assert pairs[("random", "random again")] == pytest.approx(1.0)  # same seed, same weights
    assert pairs[("random", "imagenet")] < 0.999
    assert "**random**" in payload["caption"] and "**imagenet**" in payload["caption"]


def test_knn_matches_the_knn_command_and_shares_its_features(corpus, tmp_path):
    features = tmp_path / "features"
    cache = ["--feature-cache", str(features)]
    assert analyze(corpus, "knn", tmp_path / "knn", "--data", str(corpus.task), "--per-layer", *cache) == 0
    payload = read(tmp_path / "knn" / "knn.json")
    assert payload["metric"] == "accuracy" and payload["k"] == 20
    assert set(payload["checkpoints"]) == {"random", "imagenet"}
    layers = payload["per_layer"]["scores"]
    assert list(layers) == ["layer1", "layer2", "layer3", "layer4", "output"]
    assert layers["output"] == pytest.approx(payload["checkpoints"]["random"])
    assert is_png(tmp_path / "knn" / "knn.png") and is_png(tmp_path / "knn" / "knn_layers_random.png")
    cached = sorted(features.iterdir())

    code = main(
        [
            "knn", "--checkpoint", f"imagenet:{corpus.imagenet}", "--name", "imagenet", "--backbone", BACKBONE,
            "--data", str(corpus.task), "--image-size", "32", "--seeds", "0", "--out", str(tmp_path / "eval"),
            *cache, "workers=0", "bootstrap=0",
        ]
    )  # fmt: skip
    assert code == 0
    assert sorted(features.iterdir()) == cached  # the eval command reused the analysis features
    rows = pd.read_csv(tmp_path / "eval" / "results.csv")
    accuracy = rows[(rows["metric"] == "accuracy") & (rows["protocol"] == "knn-k20")]["value"]
    assert accuracy.tolist() == pytest.approx([payload["checkpoints"]["imagenet"]])


def test_umap_per_checkpoint_coloured_by_domain(corpus, tmp_path):
    assert analyze(corpus, "umap", tmp_path, *sources(corpus)) == 0
    payload = read(tmp_path / "umap.json")
    assert set(payload["checkpoints"]) == {"random", "imagenet"}
    for name, result in payload["checkpoints"].items():
        assert is_png(tmp_path / result["figure"]) and result["figure"] == f"umap_{name}.png"
        assert result["domain_metrics"]["domains"] == ["CT slices", "X-ray", "natural"]
    assert "probe" in payload["caption"]


def test_domains_metrics_per_checkpoint(corpus, tmp_path):
    assert analyze(corpus, "domains", tmp_path, *sources(corpus)) == 0
    payload = read(tmp_path / "domains.json")
    for metrics in payload["checkpoints"].values():
        assert 0.0 <= metrics["probe_accuracy"] <= 1.0
        assert metrics["chance_accuracy"] == pytest.approx(16 / 40)
        assert metrics["n"] == 40
    assert is_png(tmp_path / "domains.png")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cka", "--checkpoint", "random"], "at least two --checkpoint"),
        (["cka", "--checkpoint", "random", "--checkpoint", "random", "--name", "a"], "2 --checkpoint"),
        (
            ["knn", "--checkpoint", "random", "--data", "phantom-ct", "--data", "phantom-xray"],
            "one labelled task",
        ),
        (
            ["cka", "--checkpoint", "random", "--checkpoint", "random", "--name", "a", "--name", "a"],
            "distinct",
        ),
        (["domains", "--checkpoint", "random"], "at least two domains"),
        (["umap", "--checkpoint", "random", "--data", "no-such-source"], "not a data source"),
    ],
)
def test_user_errors_are_one_line(corpus, tmp_path, capsys, argv, message):
    data = [] if "--data" in argv else ["--data", str(corpus.natural)]
    code = main(
        ["analyze", *argv, *data, "--backbone", BACKBONE, "--image-size", "32", "--out", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_domains_split_by_modality_and_name_shared_labels_by_source(corpus):
    from ssl_radiology.analysis.sampling import sample_domains

    sample = sample_domains([str(corpus.phantom), str(corpus.natural)], 32, max_per_domain=5, seed=1)
    assert sample.counts() == {"CT slices": 5, "X-ray": 5, "natural": 5}
    again = sample_domains([str(corpus.phantom), str(corpus.natural)], 32, max_per_domain=5, seed=1)
    assert again.fingerprint == sample.fingerprint
    assert sample_domains([str(corpus.phantom)], 32, 5, seed=2).fingerprint != sample.fingerprint
    twice = sample_domains([str(corpus.phantom), str(corpus.task)], 32, max_per_domain=3)
    assert twice.counts() == {f"CT slices ({corpus.phantom})": 3, f"CT slices ({corpus.task})": 3, "X-ray": 3}
    first = sample.dataset[0]
    assert first["image"].shape == (1, 32, 32) and first["modality"] in {"CT", "CR", "DX", "OT"}


def test_modality_selector_restricts_a_mixed_source(corpus):
    from ssl_radiology.analysis.sampling import sample_domains

    ct_only = sample_domains([f"{corpus.phantom}:CT"], 32, max_per_domain=1000, seed=0)
    assert set(ct_only.counts()) == {"CT slices"}
    both = sample_domains([str(corpus.phantom)], 32, max_per_domain=1000, seed=0)
    assert both.counts()["CT slices"] == ct_only.counts()["CT slices"] and "X-ray" in both.counts()
    assert ct_only.fingerprint != both.fingerprint
