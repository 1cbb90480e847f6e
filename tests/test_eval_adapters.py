"""Dataset adapters on tiny synthetic files: MedMNIST .npz, CheXpert CSV + PNGs, NIH, ImageFolder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.adapters import chexpert_task
from ssl_radiology.evaluation.tasks import load_task


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
    assert task.kind == "multiclass" and task.class_names == ["0", "1", "2"]
    assert (task.split == "train").sum() == 12 and (task.split == "val").sum() == 4
    item = task.dataset[0]
    assert item["image"].shape == (1, 32, 32) and float(item["image"].max()) <= 65535.0
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


def _chexpert(root, n_train: int = 6):
    rows = []
    for split, n in (("train", n_train), ("valid", 3)):
        for i in range(n):
            rel = f"CheXpert-v1.0-small/{split}/patient{i:05d}/study1/view1_frontal.jpg"
            Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(_mk(root.parent / rel))
            rows.append(
                {"Path": rel, "Sex": "Female" if i % 2 else "Male", "Age": 30 + 7 * i, "Frontal/Lateral": "Frontal",
                 "Atelectasis": [1.0, -1.0, 0.0][i % 3], "Edema": [None, 1.0, -1.0][i % 3], "_split": split}
            )  # fmt: skip
    frame = pd.DataFrame(rows)
    for split, name in (("train", "train.csv"), ("valid", "valid.csv")):
        frame[frame["_split"] == split].drop(columns="_split").to_csv(root / name, index=False)


def _mk(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize(("policy", "expected"), [("U-Ones", 1.0), ("U-Zeros", 0.0), ("ignore", 0.0)])
def test_chexpert_uncertainty_policies(tmp_path, policy, expected):
    root = tmp_path / "CheXpert-v1.0-small"
    root.mkdir()
    _chexpert(root)
    task = chexpert_task("chexpert", 16, str(root), labels=["Atelectasis", "Edema"], uncertain=policy)
    assert task.labels[1, 0] == expected  # row 1: Atelectasis -1
    assert task.labels[0, 1] == 0.0  # blank -> negative
    assert (task.split == "test").sum() == 3 and task.patients[0] == "patient00000"
    if policy == "ignore":
        assert task.label_mask is not None and not task.label_mask[1, 0] and task.label_mask[0, 0]
    else:
        assert task.label_mask is None
    assert task.groups["sex"].tolist()[:2] == ["M", "F"] and task.groups["age_band"][0] == "30-39"
    assert task.dataset[0]["image"].shape == (1, 16, 16)
    with pytest.raises(UserError, match="policy 'maybe' unknown"):
        chexpert_task("chexpert", 16, str(root), uncertain="maybe")


def test_nih_official_patient_split(tmp_path):
    names = [f"{i:08d}_000.png" for i in range(6)]
    for i, name in enumerate(names):
        _png(tmp_path / "images_001" / "images" / name, 30 * i)
    pd.DataFrame(
        {"Image Index": names, "Finding Labels": ["No Finding", "Effusion|Mass", "Mass", "Nodule", "No Finding", "Hernia"],
         "Patient ID": [1, 1, 2, 2, 3, 3], "Patient Age": [40, 41, 55, 56, 70, 71], "Patient Gender": list("MMFFMF")}
    ).to_csv(tmp_path / "Data_Entry_2017.csv", index=False)  # fmt: skip
    (tmp_path / "train_val_list.txt").write_text("\n".join(names[:4]))
    (tmp_path / "test_list.txt").write_text("\n".join(names[4:]))
    task = load_task(f"nih:{tmp_path}", image_size=16)
    assert task.kind == "multilabel" and len(task.class_names) == 14
    assert task.labels[1, task.class_names.index("Effusion")] == 1 and task.labels[0].sum() == 0
    assert set(task.patients[task.split == "test"]) == {"3"}


def test_imagefolder_hash_split_and_given_split(tmp_path):
    for cls in ("normal", "abnormal"):
        for i in range(6):
            _png(tmp_path / "flat" / cls / f"{cls}{i}.png", 20 * i)
            _png(tmp_path / "split" / ("train" if i < 4 else "test") / cls / f"{cls}{i}.png", 20 * i)
    task = load_task(f"imagefolder:{tmp_path / 'flat'}", image_size=16)
    assert task.class_names == ["abnormal", "normal"] and len(task.labels) == 12
    assert set(task.split) == {"train", "test"}
    task = load_task(f"imagefolder:{tmp_path / 'split'}", image_size=16)
    assert (task.split == "test").sum() == 4
    with pytest.raises(UserError, match="no class folders"):
        load_task(f"imagefolder:{tmp_path / 'flat' / 'normal'}", image_size=16)


def test_unknown_task_lists_known_ones():
    with pytest.raises(UserError, match=r"unknown task 'nope'.*phantom-ct"):
        load_task("nope", image_size=32)
