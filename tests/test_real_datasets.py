"""Real public datasets end to end, on fake downloads laid out as the official ones (``tests/datasets.py``).

The README's dataset commands run against the fixtures; sources and tasks key patients by the dataset's own
IDs (so splits are patient-disjoint), leave official test images out of pre-training, record bad images
instead of failing, notice a changed root, read an image exactly as pre-training reads it, and write no
patient identifier anywhere.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Fixture, radiograph, write_chexpert, write_medmnist, write_mimic, write_nih
from PIL import Image

from ssl_radiology.data import keys
from ssl_radiology.data.sources import open_source, resolve_source
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.tasks import load_task, save_skipped

ENV = {
    "chexpert": "CHEXPERT_ROOT",
    "nih": "NIH_CXR14_ROOT",
    "mimic": "MIMIC_CXR_ROOT",
    "medmnist": "MEDMNIST_ROOT",
}
NAMESPACE = {"chexpert": "chexpert", "nih": "nih", "mimic": "mimic"}
SOURCES = {"chexpert": "chexpert", "nih": "nih-cxr14", "mimic": "mimic-cxr"}


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Fixture]]:
    """All four fake downloads, their variables set, one cache and one installation key for the module."""
    base = tmp_path_factory.mktemp("downloads")
    fixtures = {
        "chexpert": write_chexpert(base / "chexpert"),
        "nih": write_nih(base / "ChestX-ray14"),
        "mimic": write_mimic(base / "mimic-cxr-jpg" / "2.0.0"),
        "medmnist": write_medmnist(base / "medmnist"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for name, env in ENV.items():
            mp.setenv(env, str(fixtures[name].root))
        mp.setenv("SSL_RAD_CACHE", str(base / "cache"))
        mp.setenv("SSL_RAD_KEY", "test-installation-key")
        mp.delenv("SSL_RAD_SALT", raising=False)
        yield fixtures


def _patient_keys(fixture: Fixture, namespace: str, rels: set[str]) -> set[str]:
    return {keys.patient_key(f"{namespace}/{int(fixture.patients[r]) if namespace == 'nih' else fixture.patients[r]}") for r in rels}  # fmt: skip


@pytest.mark.parametrize("dataset", ["chexpert", "nih", "mimic"])
def test_sources_key_patients_by_dataset_ids_and_leave_official_tests_out(downloads, dataset):
    fixture = downloads[dataset]
    usable = set(fixture.patients) - fixture.bad_files
    manifest = open_source(SOURCES[dataset]).manifest
    assert set(manifest["patient_key"]) == _patient_keys(
        fixture, NAMESPACE[dataset], usable - fixture.test_files
    )
    assert len(manifest) == len(usable - fixture.test_files)
    assert set(manifest["file_key"]) == {keys.file_key(r) for r in usable - fixture.test_files}
    with_test = open_source(f"{SOURCES[dataset]}+test").manifest  # the documented switch
    assert set(with_test["patient_key"]) == _patient_keys(fixture, NAMESPACE[dataset], usable)


def test_medmnist_source_leaves_test_arrays_out(downloads):
    manifest = open_source("medmnist").manifest
    test_keys = {
        keys.file_key(f"{stem}/test/{i:06d}.png") for stem in ("chestmnist", "organamnist") for i in range(10)
    }
    assert len(manifest) == 2 * (24 + 8) and not test_keys & set(manifest["file_key"])
    assert len(open_source("medmnist+test")) == 2 * 42


@pytest.mark.parametrize(
    ("task_name", "dataset", "n_classes"),
    [("chexpert", "chexpert", 5), ("nih-cxr14", "nih", 14), ("mimic-cxr", "mimic", 5), ("chestmnist", None, 14),
     ("organamnist", None, 11)],
)  # fmt: skip
def test_tasks_split_by_patient_and_record_bad_images(downloads, task_name, dataset, n_classes):
    task = load_task(task_name, image_size=32)
    assert task.name == task_name and len(task.class_names) == n_classes
    train, test = (set(task.patients[task.split == s]) for s in ("train", "test"))
    assert train and test and not train & test
    assert task.dataset[0]["image"].shape == (1, 32, 32)
    if dataset is None:
        assert (task.split == "val").sum() == 8 and len(task.skipped) == 0
        return
    fixture = downloads[dataset]
    bad_keys = {keys.file_key(r) for r in fixture.bad_files}  # NIH: a never-extracted file is known by name
    assert bad_keys <= set(task.skipped["file_key"])
    assert len(task.skipped) >= len(fixture.bad_files) and task.skipped["reason"].str.len().gt(0).all()
    assert set(task.patients) <= _patient_keys(fixture, NAMESPACE[dataset], set(fixture.patients))
    official_test = _patient_keys(fixture, NAMESPACE[dataset], fixture.test_files)
    assert test == official_test - _patient_keys(
        fixture, NAMESPACE[dataset], fixture.bad_files & set(fixture.patients)
    )


def test_skipped_images_are_listed_by_key_with_a_summary(downloads, tmp_path):
    task = load_task("chexpert", image_size=32)
    summary = save_skipped(task, tmp_path)
    assert summary.startswith("task chexpert: 2 images skipped (") and "\n" not in summary
    assert "cannot read image" in summary and "not found under the root" in summary
    written = (tmp_path / "skipped-chexpert.csv").read_text()
    assert written.splitlines()[0] == "file_key,reason" and "patient" not in written
    assert save_skipped(load_task("organamnist", image_size=32), tmp_path) is None


def test_short_forms_read_well(downloads):
    assert load_task(f"chexpert:{downloads['chexpert'].root}", image_size=32).name == "chexpert"
    assert (
        load_task(f"medmnist:{downloads['medmnist'].root / 'organamnist.npz'}", image_size=32).name
        == "organamnist"
    )
    assert load_task(f"mimic:{downloads['mimic'].root}", image_size=32).name == "mimic-cxr"


def test_uncertain_policies_reach_labels_and_mask(downloads):
    ignore, ones, zeros = (load_task("chexpert", 32, uncertain=p) for p in ("ignore", "U-Ones", "U-Zeros"))
    uncertain = ~ignore.label_mask
    assert uncertain.any() and (ones.labels[uncertain] == 1).all() and (zeros.labels[uncertain] == 0).all()
    assert ones.label_mask is None and zeros.label_mask is None
    with pytest.raises(UserError, match="uncertain-label policy 'maybe'"):
        load_task("chexpert", 32, uncertain="maybe")


def test_same_portrait_radiograph_in_pretraining_and_evaluation(downloads):
    fixture = downloads["chexpert"]
    source = open_source("chexpert")  # prepared at configs/data/chexpert.yaml's 256 px
    task = load_task("chexpert", image_size=source.image_size)
    rel = "train/patient00003/study1/view1_frontal.jpg"
    assert Image.open(fixture.root / rel).height > Image.open(fixture.root / rel).width  # portrait
    key = keys.file_key(rel)
    a = source[int(np.flatnonzero(source.manifest["file_key"] == key)[0])]["image"]
    b = task.dataset[int(np.flatnonzero(task.dataset.manifest["file_key"] == key)[0])]["image"]
    assert a.shape == b.shape == (1, 256, 256) and bool((a == b).all())
    assert float(a[0, :, :10].max()) == 0.0  # padded left and right, not stretched
    mm_source = open_source("medmnist")
    mm_task = load_task("organamnist", image_size=mm_source.image_size)
    key = keys.file_key("organamnist/train/000003.png")
    a = mm_source[int(np.flatnonzero(mm_source.manifest["file_key"] == key)[0])]["image"]
    b = mm_task.dataset[int(np.flatnonzero(mm_task.dataset.manifest["file_key"] == key)[0])]["image"]
    assert bool((a == b).all())  # MedMNIST: one intensity scaling for both


def test_changed_root_is_noticed(downloads, tmp_path, monkeypatch, capsys):
    root = tmp_path / "CheXpert-v1.0-small"
    shutil.copytree(downloads["chexpert"].root, root)
    monkeypatch.setenv("CHEXPERT_ROOT", str(root))
    monkeypatch.setenv("SSL_RAD_CACHE", str(tmp_path / "cache"))
    before = len(open_source("chexpert"))
    Image.fromarray(radiograph(99)).save(_mkdir(root / "train/patient00099/study1/view1_frontal.jpg"))
    after = open_source("chexpert")
    assert len(after) == before + 1 and keys.patient_key("chexpert/patient00099") in set(
        after.manifest["patient_key"]
    )
    assert "changed since it was prepared" in capsys.readouterr().out
    skipped = len(load_task("chexpert", image_size=32).skipped)
    missing = "train/patient00001/study9/view1_frontal.jpg"  # listed in train.csv, never extracted
    Image.fromarray(radiograph(98)).save(_mkdir(root / missing))
    task = load_task("chexpert", image_size=32)
    assert len(task.skipped) == skipped - 1 and keys.file_key(missing) in set(
        task.dataset.manifest["file_key"]
    )
    other = tmp_path / "other"
    shutil.copytree(root, other / "CheXpert-v1.0-small")
    monkeypatch.setenv("CHEXPERT_ROOT", str(other / "CheXpert-v1.0-small"))
    with pytest.raises(UserError, match=r"was prepared from .*point the variable back, or delete"):
        open_source("chexpert")  # re-pointed: never serve (or overwrite) the other folder's preparation
    npz = Path(downloads["medmnist"].root)
    copy = tmp_path / "medmnist"
    shutil.copytree(npz, copy)
    monkeypatch.setenv("MEDMNIST_ROOT", str(copy))
    first = resolve_source("medmnist")
    write_medmnist(copy, seed=1)  # same names, new content
    assert resolve_source("medmnist") != first


def _mkdir(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> dict:
        raise UserError(f"image {i}: cannot read image (truncated)")


def test_an_error_in_a_loader_worker_reaches_the_user_as_one_line():
    with pytest.raises(UserError) as info:
        list(torch.utils.data.DataLoader(_Unreadable(), num_workers=1))
    assert str(info.value) == "image 0: cannot read image (truncated)"
    assert "Original Traceback" in info.value.args[0]  # torch's wrapping is still there for debugging
