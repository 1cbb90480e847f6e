"""The notebooks in ``analysis/`` execute headless (nbclient) on tiny settings, so they cannot rot.

Settings reach the notebooks through ``SSL_RAD_NOTEBOOK_SETTINGS`` (JSON read by each settings cell). The
kernel is this interpreter's: a ``python3`` kernelspec is installed into a temporary prefix that
``JUPYTER_PATH`` puts first, and the test checks that it launches ``sys.executable``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from test_analyze_cli import BACKBONE, PNG_MAGIC, TEST_KEY, USER_NUMBA_CACHE, tiny_corpus

from ssl_radiology.cli import main

NOTEBOOKS = Path(__file__).resolve().parents[1] / "analysis"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A private kernelspec for this interpreter, the tiny corpus and its cache in the environment."""
    prefix = tmp_path_factory.mktemp("kernel")
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "python3"],
        check=True,
        capture_output=True,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SSL_RAD_KEY", TEST_KEY)
        corpus = tiny_corpus(tmp_path_factory.getbasetemp())
        patch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        patch.setenv("SSL_RAD_CACHE", str(corpus.cache))
        patch.setenv("NUMBA_CACHE_DIR", os.environ.get("NUMBA_CACHE_DIR", str(USER_NUMBA_CACHE)))
        yield corpus


def execute(name: str, settings: dict, monkeypatch, cwd: Path) -> nbformat.NotebookNode:
    monkeypatch.setenv("SSL_RAD_NOTEBOOK_SETTINGS", json.dumps(settings))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(cwd)}}
    )
    return client.execute()


def images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in out.get("data", {}) for cell in notebook.cells for out in cell.get("outputs", [])
    )


@pytest.mark.parametrize("name", ["feature_space.ipynb", "transfer_results.ipynb"])
def test_committed_notebooks_carry_no_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "SSL_RAD_NOTEBOOK_SETTINGS" in code[0].source and "SETTINGS" in code[0].source
    assert notebook.metadata.kernelspec.name == "python3"


def test_kernel_runs_this_interpreter(kernel_env):
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.argv[0]).resolve() == Path(sys.executable).resolve()


def test_feature_space_notebook(kernel_env, tmp_path, monkeypatch):
    corpus = kernel_env
    out = tmp_path / "figures"
    settings = {
        "checkpoints": [
            {"spec": "random", "name": "random", "backbone": BACKBONE, "seed": 0},
            {"spec": f"imagenet:{corpus.imagenet}", "name": "imagenet", "backbone": BACKBONE, "seed": 0},
        ],
        "data": [str(corpus.phantom), str(corpus.natural)],
        "task": str(corpus.task),
        "image_size": 32,
        "max_samples": 16,
        "device": "cpu",
        "eval_overrides": ["workers=0"],
        "out": str(out),
    }
    notebook = execute("feature_space.ipynb", settings, monkeypatch, tmp_path)
    assert images(notebook) == 5  # CKA heatmap, kNN bars, kNN per layer, two UMAPs
    written = {p.name for p in out.iterdir()}
    assert {"cka.json", "knn.json", "umap.json", "umap_random.png", "umap_imagenet.png"} <= written
    assert all((out / n).read_bytes()[:8] == PNG_MAGIC for n in written if n.endswith(".png"))
    table = notebook.cells[-1].outputs[0]["data"]["text/plain"]
    assert "probe_accuracy" in table and "imagenet" in table


def test_transfer_results_notebook(kernel_env, tmp_path, monkeypatch):
    corpus = kernel_env
    results = []
    for name, spec in (("random", "random"), ("imagenet", f"imagenet:{corpus.imagenet}")):
        folder = tmp_path / "eval" / name
        code = main(
            [
                "knn", "--checkpoint", spec, "--name", name, "--backbone", BACKBONE, "--data", str(corpus.task),
                "--image-size", "32", "--seeds", "0,1", "--out", str(folder), "workers=0", "bootstrap=0",
            ]
        )  # fmt: skip
        assert code == 0
        results.append(str(folder))
    out = tmp_path / "comparison"
    settings = {"results": results, "baseline": "random", "out": str(out)}
    notebook = execute("transfer_results.ipynb", settings, monkeypatch, tmp_path)
    assert images(notebook) == 2
    table = pd.read_csv(out / "comparison.csv")
    tested = table[(table["name"] == "imagenet") & (table["metric"] == "accuracy")]
    assert len(tested) == 4 and (tested["n"] == 1).all()  # knn-k10/20/100/200; a fixed checkpoint is 1 unit
    # both conditions stored their test predictions: every cell has a paired patient-bootstrap test
    assert tested["p_holm"].notna().all() and (tested["delta_low"] <= tested["delta_high"]).all()
    assert (out / "significance.png").read_bytes()[:8] == PNG_MAGIC
    summary = notebook.cells[-1].outputs[1]["data"]["text/markdown"]
    assert summary.startswith("4 cells tested against **random**") and "0 cells without" in summary
