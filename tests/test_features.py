"""The feature layer: light imports, no arrow up to evaluation/analysis, cached per-seed features."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_radiology.api.types import BackboneRef
from ssl_radiology.errors import UserError
from ssl_radiology.features.extractor import FeatureExtractor, FeatureOptions

PACKAGE = Path(__file__).resolve().parents[1] / "ssl_radiology"


def _imports(folder: str) -> dict[str, set[str]]:
    """``{module file: ssl_radiology modules it imports}`` (module level and inside functions)."""
    found = {}
    for path in (PACKAGE / folder).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[path.name] = {n for n in names if n.startswith("ssl_radiology")}
    return found


def test_no_arrow_up_from_evaluation_or_features():
    for module, names in _imports("evaluation").items():
        assert not [n for n in names if n.startswith("ssl_radiology.analysis")], module
    upper = (
        "ssl_radiology.analysis",
        "ssl_radiology.evaluation",
        "ssl_radiology.commands",
        "ssl_radiology.cli",
    )
    for module, names in _imports("features").items():
        assert not [n for n in names if n.startswith(upper)], module
        assert not [n for n in names if n.startswith("ssl_radiology.api") and n != "ssl_radiology.api.types"]


def test_feature_and_command_modules_import_without_torch_or_faiss():
    code = (
        "import sys\n"
        "import ssl_radiology.features.knn, ssl_radiology.features.extract, ssl_radiology.features.extractor\n"
        "import ssl_radiology.features.layers, ssl_radiology.commands.embed, ssl_radiology.commands.analyze\n"
        "print(sorted({'torch', 'faiss', 'sklearn', 'timm', 'umap'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


class _Images(torch.utils.data.Dataset):
    """CT-like images in the prepared-dataset item format."""

    def __init__(self, n: int = 10) -> None:
        self.x = torch.randn(n, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 300

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "index": i, "modality": "CT"}


def test_random_weights_per_seed_cached_and_rng_untouched(tmp_path):
    options = FeatureOptions(image_size=32, batch_size=4, cache_dir=tmp_path)
    extractor = FeatureExtractor(BackboneRef("random", "test_vit3", seed=0), options)
    assert extractor.hash == "random-test_vit3" and extractor.weights_hash(3) == "random-test_vit3-seed3"
    torch.manual_seed(123)
    state = torch.get_rng_state()
    extractor.model(5)
    assert torch.equal(torch.get_rng_state(), state)  # weights drawn in a forked RNG
    data = _Images()
    first = extractor.features(data, "fp")
    other = extractor.features(data, "fp", seed=1)
    assert first.shape == (10, 96) and not np.allclose(first, other)
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == sorted(
        f"{extractor.key('fp', s)}.npy" for s in (0, 1)
    )
    np.save(tmp_path / f"{extractor.key('fp')}.npy", np.zeros_like(first))  # the cache is what is read
    assert not extractor.features(data, "fp").any()
    again = FeatureExtractor(BackboneRef("random", "test_vit3", seed=1), options).features(data, "other")
    np.testing.assert_array_equal(again, other)  # same seed, same weights, whatever the fingerprint


def test_final_pooling_of_a_vit(tmp_path):
    ref = BackboneRef("random", "test_vit")  # timm's global_pool="token": its output is the class token
    pooled = {
        p: FeatureExtractor(ref, FeatureOptions(32, batch_size=4, cache_dir=tmp_path, pooling=p)).features(
            _Images(), "fp"
        )
        for p in ("model", "cls", "mean")
    }
    np.testing.assert_allclose(pooled["cls"], pooled["model"], rtol=1e-5, atol=1e-6)  # timm: token pooling
    assert not np.allclose(pooled["mean"], pooled["model"])
    assert len(list(tmp_path.glob("*.npy"))) == 3  # pooling is part of the key
    with pytest.raises(UserError, match="needs --backbone"):
        FeatureExtractor(BackboneRef("random"), FeatureOptions(32))
