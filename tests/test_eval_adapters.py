"""Task adapters and the task registry on tiny synthetic files: MedMNIST .npz, NIH, ImageFolder, a new adapter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssl_radiology.data import keys
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.tasks import Task, load_task, register_task, uncertain_labels
from ssl_radiology.features.knn import knn_probabilities


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Tasks prepare their images into the cache: a fresh one, and a fixed installation key."""
    monkeypatch.setenv("SSL_RAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SSL_RAD_KEY", "adapter-tests")


def _png(path, value: int, size: int = 20) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size, size + 4), value, np.uint8)
    pixels[2:6, 2:6] = 255 - value
    Image.fromarray(pixels).save(path)


def test_medmnist_multiclass_and_multilabel(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for part, n in (("train", 12), ("val", 4), ("test", 6)):
        arrays[f"{part}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{part}_labels"] = (np.arange(n) % 3).reshape(n, 1)
    np.savez(tmp_path / "organ.npz", **arrays)
    task = load_task(f"medmnist:{tmp_path / 'organ.npz'}", image_size=32)
    assert task.name == "organ" and task.kind == "multiclass" and task.class_names == ["0", "1", "2"]
    assert (task.split == "train").sum() == 12 and (task.split == "val").sum() == 4
    item = task.dataset[0]
    assert item["image"].shape == (1, 32, 32) and float(item["image"].max()) == 65535.0  # prepare's stretch
    arrays = {
        k: (rng.random((len(v), 4)) < 0.5).astype(np.uint8) if k.endswith("labels") else v
        for k, v in arrays.items()
    }
    np.savez(tmp_path / "chest.npz", **arrays)
    task = load_task(f"medmnist:{tmp_path / 'chest.npz'}", image_size=32)
    assert task.kind == "multilabel" and task.labels.shape == (22, 4)
    del arrays["test_labels"]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match=r"bad\.npz: array 'test_labels' missing"):
        load_task(f"medmnist:{tmp_path / 'bad.npz'}", image_size=32)


def test_uncertain_label_policies():
    raw = np.array([[1.0, -1.0, np.nan, 0.0]])
    y, mask = uncertain_labels(raw, "ignore")
    assert y.tolist() == [[1, 0, 0, 0]] and mask.tolist() == [[True, False, True, True]]
    assert (
        uncertain_labels(raw, "U-Ones")[0].tolist() == [[1, 1, 0, 0]]
        and uncertain_labels(raw, "U-Ones")[1] is None
    )
    assert uncertain_labels(raw, "U-Zeros")[0].tolist() == [[1, 0, 0, 0]]
    with pytest.raises(UserError, match="policy 'maybe' unknown"):
        uncertain_labels(raw, "maybe")


def test_knn_ignores_unknown_labels_in_votes():
    """'ignore' must differ from U-Zeros: a neighbour with an unknown label casts no vote for it."""
    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], np.float32)
    labels = np.array([[1.0], [0.0], [0.0]], np.float32)  # row 1's 0 stands for an uncertain label
    mask = np.array([[True], [False], [True]])
    query = np.array([[1.0, 0.05]], np.float32)
    zeros = knn_probabilities(bank, labels, query, "multilabel", 1, ks=[2])[2]
    ignore = knn_probabilities(bank, labels, query, "multilabel", 1, ks=[2], train_mask=mask)[2]
    assert ignore[0, 0] == pytest.approx(1.0) and zeros[0, 0] < 0.6
    none_known = knn_probabilities(bank, labels, query, "multilabel", 1, ks=[1], train_mask=~mask)[1]
    assert none_known[0, 0] == pytest.approx(0.0)  # the one known label (row 1) is 0: prevalence 0


def test_nih_official_patient_split_keys_the_csv_patient_id(tmp_path):
    names = [f"{i:08d}_000.png" for i in range(1, 7)]
    for i, name in enumerate(names):
        _png(tmp_path / "images_001" / "images" / name, 30 * i)
    pd.DataFrame(
        {"Image Index": names, "Finding Labels": ["No Finding", "Effusion|Mass", "Mass", "Nodule", "No Finding", "Hernia"],
         "Follow-up #": 0, "Patient ID": [1, 2, 3, 4, 5, 6], "Patient Age": [40, 41, 55, 56, 70, 71],
         "Patient Gender": list("MMFFMF")}
    ).to_csv(tmp_path / "Data_Entry_2017.csv", index=False)  # fmt: skip
    (tmp_path / "train_val_list.txt").write_text("\n".join(names[:4]))
    (tmp_path / "test_list.txt").write_text("\n".join(names[4:]))
    task = load_task(f"nih:{tmp_path}", image_size=16)
    assert task.name == "nih-cxr14" and task.kind == "multilabel" and len(task.class_names) == 14
    assert task.labels[1, task.class_names.index("Effusion")] == 1 and task.labels[0].sum() == 0
    assert set(task.patients[task.split == "test"]) == {keys.patient_key("nih/5"), keys.patient_key("nih/6")}
    assert set(task.patients) == set(task.dataset.manifest["patient_key"])  # CSV IDs == file-name IDs
    assert task.groups["sex"].tolist()[:3] == ["M", "M", "F"] and task.groups["age_band"][0] == "40-49"


def test_imagefolder_hash_split_given_split_and_patient_regex(tmp_path):
    for cls in ("normal", "abnormal"):
        for i in range(6):
            _png(tmp_path / "flat" / cls / f"P{i % 3}_{cls}{i}.png", 20 * i + 5)
            _png(tmp_path / "split" / ("train" if i < 4 else "test") / cls / f"{cls}{i}.png", 20 * i + 5)
    task = load_task(f"imagefolder:{tmp_path / 'flat'}", image_size=16)
    assert (
        task.name == "imagefolder-flat"
        and task.class_names == ["abnormal", "normal"]
        and len(task.labels) == 12
    )
    assert set(task.split) == {"train", "test"}
    task = load_task(f"imagefolder:{tmp_path / 'split'}", image_size=16)
    assert (task.split == "test").sum() == 4
    task = load_task(f"imagefolder:{tmp_path / 'flat'}", image_size=16, patient_regex=r"^(P\d)_")
    assert len(set(task.patients)) == 3
    train, test = (set(task.patients[task.split == s]) for s in ("train", "test"))
    assert not train & test
    with pytest.raises(UserError, match="no class folders"):
        load_task(f"imagefolder:{tmp_path / 'flat' / 'normal'}", image_size=16)


def test_a_new_dataset_is_one_adapter_and_one_yaml(tmp_path):
    @register_task("toy-registry-test")
    def toy(name: str, image_size: int, n: int) -> Task:
        return Task(
            name=name, dataset=[0] * n, labels=np.arange(n) % 2, kind="multiclass", class_names=["a", "b"],
            patients=np.arange(n).astype(str), groups=pd.DataFrame({"site": ["s"] * n, "sex": ["F"] * n, "age_band": ["unknown"] * n}),
            split=np.array(["train", "test"] * (n // 2)), fingerprint=f"toy{image_size}",
        )  # fmt: skip

    yaml = tmp_path / "toy.yaml"
    yaml.write_text("adapter: toy-registry-test\nn: 4\n")
    task = load_task(str(yaml), image_size=8)
    assert task.name == "toy" and len(task.indices("test")) == 2
    with pytest.raises(ValueError, match="registered twice"):
        register_task("toy-registry-test")(lambda **kw: None)
    yaml.write_text("adapter: nope\n")
    with pytest.raises(UserError, match=r"unknown adapter 'nope' \(known: chexpert, imagefolder"):
        load_task(str(yaml), image_size=8)


def test_unknown_task_lists_known_ones():
    with pytest.raises(UserError, match=r"unknown task 'nope'.*phantom-ct.*chexpert:PATH"):
        load_task("nope", image_size=32)
