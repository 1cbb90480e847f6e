"""MedMNIST v2: one ``.npz`` (``train/val/test_images`` + ``_labels``) with its official, patient-level splits.

The arrays are written once as PNGs (``data.sources.write_npz_images``, the writer the ``medmnist``
pre-training source uses) and prepared like any image folder, so an image reaches the model scaled exactly
as in ``--data medmnist`` pre-training. ChestMNIST (several label columns) is multi-label.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

from ssl_radiology.data.cache import cache_root
from ssl_radiology.data.freshness import file_digest
from ssl_radiology.data.identities import MedMnist
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.tasks.base import Task, fingerprint
from ssl_radiology.evaluation.tasks.images import prepare_images
from ssl_radiology.evaluation.tasks.registry import register_task

PARTS = (("train", "train"), ("val", "val"), ("test", "test"))


def _arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable .npz ({exc})") from exc
    for part, _ in PARTS:
        for key in (f"{part}_images", f"{part}_labels"):
            if key not in arrays:
                raise UserError(f"{path}: array '{key}' missing (has {', '.join(sorted(arrays))})")
        if len(arrays[f"{part}_images"]) != len(arrays[f"{part}_labels"]):
            raise UserError(f"{path}: {part}_images and {part}_labels differ in length")
    return arrays


def _png_folder(path: Path, digest: str) -> Path:
    """The ``.npz`` written as PNGs under the cache, once per content (atomic rename, one writer at a time)."""
    from ssl_radiology.data.sources import write_npz_images

    folder = cache_root() / "tasks" / f"medmnist-png-{digest[:16]}"
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not folder.is_dir():
            tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            write_npz_images([path], tmp)
            os.replace(tmp, folder)
    return folder


@register_task("medmnist", short_name=lambda path: Path(path).name.split(".")[0])
def medmnist_task(
    name: str, image_size: int, root: str, kind: str | None = None, classes: list[str] | None = None
) -> Task:
    """One MedMNIST ``.npz``; multilabel when the label array has several columns (ChestMNIST)."""
    path = Path(root).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: MedMNIST .npz file not found")
    arrays = _arrays(path)
    digest = file_digest(path)
    images = prepare_images(
        "medmnist", _png_folder(path, digest), image_size, identify=MedMnist().identify, modality="OT"
    )
    rows = [
        {
            "rel": f"{path.stem}/{part}/{i:06d}.png",
            "split": tag,
            "label": arrays[f"{part}_labels"][i].reshape(-1),
        }
        for part, tag in PARTS
        for i in range(len(arrays[f"{part}_images"]))
    ]
    joined, skipped = images.attach(pd.DataFrame(rows))
    label_array = np.stack(joined["label"].to_list()) if len(joined) else np.zeros((0, 1))
    kind = kind or ("multilabel" if label_array.shape[1] > 1 else "multiclass")
    if kind == "multiclass":
        y = label_array[:, 0].astype(np.int64)
        n_classes = max(int(arrays[f"{p}_labels"].max()) for p, _ in PARTS) + 1
        class_names = list(classes) if classes else [str(c) for c in range(n_classes)]
    else:
        y = label_array.astype(np.float32)
        class_names = list(classes) if classes else [str(c) for c in range(y.shape[1])]
    n = len(joined)
    return Task(
        name=name,
        dataset=images.dataset(joined["row"]),
        labels=y,
        kind=kind,
        class_names=class_names,
        patients=joined["patient_key"].to_numpy(str),  # one per image: the official splits are patient-level
        groups=pd.DataFrame({"site": ["medmnist"] * n, "sex": ["unknown"] * n, "age_band": ["unknown"] * n}),
        split=joined["split"].to_numpy(str),
        fingerprint=fingerprint(name, digest, joined["file_key"].tolist(), image_size),
        info={"file": path.name, "sha256": digest},
        skipped=skipped,
    )
