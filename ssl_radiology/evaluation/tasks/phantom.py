"""The built-in phantom tasks: the prepared phantom corpus joined with its label CSVs.

The phantom is prepared as a named source (``data.sources``), so these tasks read the very images a
``--data phantom`` pre-training run reads. Patients are the prepared images' patient keys, the very keys a
pre-training run records (``pretrain_patients.json``), so the leakage guard can compare the two; the test
split is drawn from the case names, which are synthetic and stable across installations, so the test
patients (and the demo's numbers) do not depend on the installation key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ssl_radiology.data import keys
from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.tasks.base import Task, fingerprint, hash_split
from ssl_radiology.evaluation.tasks.registry import register_task


def _phantom_labels(prepared: Path, csv_name: str) -> tuple[pd.DataFrame, Path]:
    """The phantom's label CSV and the raw phantom folder (``data.sources.phantom_raw_dir``)."""
    from ssl_radiology.data.sources import phantom_raw_dir

    raw = phantom_raw_dir(prepared)
    csv = raw / "labels" / csv_name
    if not csv.is_file():
        raise UserError(f"{csv}: phantom label file not found")
    return pd.read_csv(csv), raw


@register_task("phantom")
def phantom_task(
    name: str,
    image_size: int,  # the phantom is prepared at its source's size; the evaluation transform resizes
    target: str,
    labels_csv: str,
    classes: list[str] | None = None,
    source: str = "phantom",
    modality: str | None = None,
    kind: str | None = None,
    test_fraction: float = 0.25,
    stratify: list[str] | None = None,
) -> Task:
    """A phantom task: ``target`` is one CSV column (multiclass, or a binary ``kind: multilabel`` label)
    or a comma list of 0/1 columns (multilabel). ``stratify`` names label-CSV columns (e.g. site, sex) whose
    combinations each send their share of patients to the test split (``splits.fixed_test_split``)."""
    from ssl_radiology.data.prepared import PreparedDataset, read_info
    from ssl_radiology.data.sources import resolve_source

    prepared = resolve_source(source)
    labels, raw = _phantom_labels(prepared, labels_csv)
    info = read_info(prepared)
    secret = keys.dataset_secret(info)
    manifest = PreparedDataset(prepared).manifest.reset_index(drop=True)
    keyed = pd.DataFrame(
        {
            "row": np.arange(len(manifest)),
            "file_key": manifest["file_key"],
            "slice_index": manifest["slice_index"],
        }
    )
    if modality is not None:
        keyed = keyed[manifest["modality"].to_numpy() == modality]
    labels = labels.assign(file_key=[keys.file_key(s, secret) for s in labels["source"]])
    joined = keyed.merge(labels, on=["file_key", "slice_index"], how="inner", validate="one_to_one")
    if joined.empty:
        raise UserError(f"{prepared}: no prepared image matches a row of {raw / 'labels' / labels_csv}")
    joined = joined.sort_values("row").reset_index(drop=True)
    columns = [c.strip() for c in target.split(",")]
    missing = [c for c in columns if c not in joined.columns]
    if missing:
        raise UserError(f"{raw / 'labels' / labels_csv}: no column {', '.join(missing)}")
    if len(columns) == 1 and kind != "multilabel":
        values = joined[columns[0]].astype(str)
        class_names = list(classes) if classes else sorted(values.unique())
        unknown = sorted(set(values) - set(class_names))
        if unknown:
            raise UserError(
                f"{labels_csv}: values {unknown} of '{columns[0]}' are not in classes {class_names}"
            )
        y = values.map({c: i for i, c in enumerate(class_names)}).to_numpy(np.int64)
        kind = "multiclass"
    else:
        y, class_names, kind = joined[columns].to_numpy(np.float32), columns, "multilabel"
    cases = joined["case"].astype(str).to_numpy()
    patients = manifest["patient_key"].to_numpy()[joined["row"].to_numpy()].astype(str)
    unknown_strata = [c for c in stratify or [] if c not in joined.columns]
    if unknown_strata:
        raise UserError(
            f"{raw / 'labels' / labels_csv}: no column {', '.join(unknown_strata)} to stratify by"
        )
    strata = joined[list(stratify)].astype(str).agg("|".join, axis=1).to_numpy() if stratify else None
    return Task(
        name=name,
        dataset=PreparedDataset(prepared, indices=joined["row"].to_numpy()),
        labels=y,
        kind=kind,
        class_names=class_names,
        patients=patients,
        groups=joined[["site", "sex", "age_band"]].astype(str).reset_index(drop=True),
        split=hash_split(cases, test_fraction, strata),
        fingerprint=fingerprint(name, info, joined["row"].tolist(), image_size),
        info={
            "prepared": str(prepared),
            "labels": f"labels/{labels_csv}",
            "test_fraction": test_fraction,
            "stratify": list(stratify or []),
        },
    )
