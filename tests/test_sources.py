"""Named sources: phantom / natural generated + prepared once into the cache, folders from env vars."""

from __future__ import annotations

import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_prepare_support import write_ct_series

import ssl_radiology.data.phantom
from ssl_radiology.config import config_root
from ssl_radiology.data import PreparedDataset, prepare_dataset, resolve_source
from ssl_radiology.data.sources import open_source, phantom_raw_dir, split_selector
from ssl_radiology.errors import UserError
from ssl_radiology.io import read_slices


def source_paths(prepared: Path) -> dict[str, Path]:
    """file_key -> raw file of a prepared source (manifests hold keys, not paths)."""
    from ssl_radiology.data import keys
    from ssl_radiology.data.prepared import read_info

    info = read_info(prepared)
    raw, secret = Path(info["sources"][0]), keys.dataset_secret(info)
    return {keys.file_key(p.relative_to(raw).as_posix(), secret): p for p in raw.rglob("*") if p.is_file()}


SMALL = {
    "phantom": "kind: phantom\ncases: 2\nseed: 0\nct_size: 32\nxray_size: 64\nimage_size: 32\nworkers: 1\n",
    "natural": "kind: natural\ncount: 12\nseed: 0\nmin_fraction: 0.25\nmax_fraction: 0.9\nimage_size: 32\nworkers: 1\n",
}


@pytest.fixture
def small_configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configs/ copy whose phantom and natural sources are tiny, plus an empty cache and no salt/env roots."""
    configs = tmp_path / "configs"
    shutil.copytree(config_root() / "data", configs / "data")
    for name, text in SMALL.items():
        (configs / "data" / f"{name}.yaml").write_text(text)
    monkeypatch.setenv("SSL_RAD_CONFIGS", str(configs))
    monkeypatch.setenv("SSL_RAD_CACHE", str(tmp_path / "cache"))
    for env in ("RADNET_ROOT", "SSL_RAD_SALT"):
        monkeypatch.delenv(env, raising=False)
    return tmp_path / "cache"


def test_every_named_source_has_a_config() -> None:
    names = {p.stem for p in (config_root() / "data").glob("*.yaml")}
    assert {"phantom", "natural", "radnet", "chexpert", "nih-cxr14", "mimic-cxr"} <= names


def _resolve_phantom(_: int) -> str:
    return str(resolve_source("phantom"))


def test_phantom_is_built_once_even_when_two_processes_ask(
    small_configs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ProcessPoolExecutor(2) as pool:
        first, second = pool.map(_resolve_phantom, range(2))
    assert first == second and Path(first).parent.parent == small_configs
    assert len(list(small_configs.glob("phantom-*"))) == 1 and not list(small_configs.rglob("*.tmp-*"))

    def no_regeneration(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached phantom must be reused")

    monkeypatch.setattr(ssl_radiology.data.phantom, "generate_phantom", no_regeneration)
    prepared = resolve_source("phantom")
    assert str(prepared) == first
    raw = phantom_raw_dir(prepared)
    assert (raw / "labels" / "ct_slices.csv").is_file() and (raw / "labels" / "xray.csv").is_file()


def test_phantom_round_trip_preserves_hu_and_leaks_no_identifier(small_configs: Path) -> None:
    prepared = resolve_source("phantom")
    raw = phantom_raw_dir(prepared)
    ds = PreparedDataset(prepared)
    labels = pd.read_csv(raw / "labels" / "ct_slices.csv")
    assert set(ds.manifest["modality"]) >= {"CT"} and len(PreparedDataset(prepared, modality="CT")) == len(
        labels
    )
    assert ds.manifest.loc[ds.manifest["modality"] != "CT", "shard"].str.endswith("uint16.npy").all()
    ct = PreparedDataset(prepared, modality="CT")
    for i in (0, len(ct) - 1):  # ct_size == image_size: stored HU equal the reader's, up to rounding/clipping
        row = ct.manifest.iloc[i]
        expected = read_slices(source_paths(prepared)[row["file_key"]])[row["slice_index"]].pixels
        assert np.array_equal(ct[i]["image"][0].numpy(), np.rint(np.clip(expected, -1024, 3071)))
    import pydicom

    secrets: set[str] = set()
    for path in sorted(raw.rglob("*.dcm"))[:: max(1, len(list(raw.rglob("*.dcm"))) // 6)]:
        dcm = pydicom.dcmread(path, stop_before_pixels=True)
        secrets |= {
            str(dcm.PatientName),
            str(dcm.PatientID),
            str(dcm.PatientBirthDate),
            str(dcm.StudyInstanceUID),
        }
    for path in (p for p in prepared.rglob("*") if p.is_file()):
        data = path.read_bytes()
        leaked = [s for s in secrets if s.encode() in data]
        assert not leaked, f"{leaked} found in {path}"


def test_natural_photo_crops_are_prepared_as_ot(small_configs: Path) -> None:
    ds = PreparedDataset(resolve_source("natural"))
    assert len(ds) == 12 and set(ds.manifest["modality"]) == {"OT"}
    image = ds[0]["image"]
    assert image.shape == (1, 32, 32) and float(image.max()) == 65535 and float(image.min()) == 0
    names = [source_paths(ds.root)[key].name for key in ds.manifest["file_key"]]
    assert len({name.split("-")[0] for name in names}) == 12  # one crop per photograph, cycling


def test_radnet_needs_its_root_and_prepares_it_once(
    small_configs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserError, match=r"RADNET_ROOT.*--data phantom"):
        resolve_source("radnet")
    monkeypatch.setenv("RADNET_ROOT", str(small_configs.parent / "nowhere"))
    with pytest.raises(UserError, match="not a folder"):
        resolve_source("radnet")
    root = small_configs.parent / "radnet"
    write_ct_series(root / "scan1", 2)
    monkeypatch.setenv("RADNET_ROOT", str(root))
    prepared = resolve_source("radnet")
    assert prepared == small_configs / "radnet" and len(PreparedDataset(prepared)) == 2


def test_prepared_folder_is_accepted_and_other_names_are_refused(small_configs: Path) -> None:
    src = small_configs.parent / "src"
    write_ct_series(src, 1)
    out = prepare_dataset(src, small_configs.parent / "out", image_size=32, workers=1, progress=False).out
    assert resolve_source(str(out)) == out.resolve()
    with pytest.raises(UserError, match="is not a prepared dataset"):
        resolve_source(str(src))
    with pytest.raises(UserError, match="unknown data source 'imagenet-42'"):
        resolve_source("imagenet-42")


def test_medmnist_npz_images_become_pngs_keyed_by_split_and_index(
    small_configs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(UserError, match="MEDMNIST_ROOT"):
        resolve_source("medmnist")
    root = small_configs.parent / "medmnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    arrays = {
        f"{split}_images": rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        for split, n in (("train", 3), ("test", 2))
    }
    np.savez(root / "tinymnist.npz", **arrays, train_labels=np.zeros((3, 1)), test_labels=np.ones((2, 1)))
    monkeypatch.setenv("MEDMNIST_ROOT", str(root))
    train_only = PreparedDataset(resolve_source("medmnist"))  # official test arrays stay out of pre-training
    assert len(train_only) == 3
    ds = PreparedDataset(resolve_source("medmnist+test"))
    paths = source_paths(ds.root)
    assert [paths[key].relative_to(paths[key].parents[2]).as_posix() for key in ds.manifest["file_key"]] == [
        f"tinymnist/test/{i:06d}.png" for i in range(2)
    ] + [f"tinymnist/train/{i:06d}.png" for i in range(3)]
    assert set(ds.manifest["modality"]) == {"OT"} and ds[0]["image"].shape == (1, 64, 64)


def test_modality_selector_picks_one_modality_of_a_mixed_corpus(small_configs: Path) -> None:
    assert split_selector("phantom:CT") == ("phantom", ["CT"])
    assert split_selector("phantom:cr,DX") == ("phantom", ["CR", "DX"])
    assert split_selector("phantom") == ("phantom", None)
    ct = open_source("phantom:CT")
    xray = open_source("phantom:CR,DX")
    full = open_source("phantom")
    assert set(ct.manifest["modality"]) == {"CT"} and set(xray.manifest["modality"]) <= {"CR", "DX"}
    assert len(ct) + len(xray) == len(full) and len(xray) == 2
    with pytest.raises(UserError, match="no slices of modality MR"):
        open_source("phantom:MR")
