"""A task's images go through ``prepare`` like pre-training data: one pixel path for both.

An adapter lists the image files its label table names (paths relative to the dataset root); they are
prepared once per (root, image size, selection) into ``<cache>/tasks/<adapter>-<id>`` with the dataset's
identity layout, kept in step with the root by :mod:`ssl_radiology.data.freshness`, and read back as a
:class:`~ssl_radiology.data.prepared.PreparedDataset`. So an evaluation image is resized (longer side to the
size, centred padding: :func:`ssl_radiology.data.prepare.to_stored`, the one aspect-ratio policy) and scaled
exactly as the same file is when a source is prepared for pre-training, and patient keys are the same
pseudonyms in both (the leakage guard compares them).

Label rows are joined to images by :func:`ssl_radiology.data.keys.file_key` of the relative path. Rows
without a usable image become ``skipped`` entries (file key + reason: not found, or prepare's rejection
reason); images without a label row too. Nothing here stores a path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssl_radiology.data import keys
from ssl_radiology.data.cache import cache_root
from ssl_radiology.data.freshness import ensure_prepared, read_state
from ssl_radiology.data.prepare import REJECTED_FILE
from ssl_radiology.data.prepared import PreparedDataset, read_info
from ssl_radiology.evaluation.tasks.base import SKIPPED_COLUMNS, Task, fingerprint, uncertain_labels

NOT_FOUND = "listed in the label file but not found under the root"
NO_LABEL = "image has no row in the label file"


def relative_files(root: Path) -> list[str]:
    """Posix paths, relative to ``root``, of every file ``prepare`` would try to read under it."""
    from ssl_radiology.io import find_sources

    return [p.relative_to(root).as_posix() for p in find_sources(root)]


@dataclass
class TaskImages:
    """A prepared copy of the selected files of one dataset root."""

    prepared: Path
    secret: str  # the key the copy was prepared with (labels must be joined with the same one)
    digest: str  # root fingerprint: changes when the files change

    def key(self, rel: str) -> str:
        return keys.file_key(rel, self.secret)

    def attach(self, table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``table`` (with a ``rel`` column) joined to the prepared images, in table order: adds ``row`` (into
        :meth:`dataset`'s selection), ``patient_key``, ``study_key``; returns (joined, skipped rows)."""
        manifest = PreparedDataset(self.prepared).manifest
        first = (
            manifest.assign(row=np.arange(len(manifest)))
            .sort_values(["file_key", "slice_index"])
            .drop_duplicates("file_key")[["file_key", "row", "patient_key", "study_key"]]
        )
        keyed = table.assign(file_key=[self.key(rel) for rel in table["rel"]]).drop(columns="rel")
        joined = keyed.merge(first, on="file_key", how="inner", sort=False)
        missing = keyed.loc[~keyed["file_key"].isin(first["file_key"]), "file_key"]
        rejected = pd.read_csv(self.prepared / REJECTED_FILE)
        reasons = dict(zip(rejected["file_key"], rejected["reason"], strict=True))
        skipped = pd.DataFrame({"file_key": missing, "reason": [reasons.get(k, NOT_FOUND) for k in missing]})
        return joined.reset_index(drop=True), skipped[SKIPPED_COLUMNS].reset_index(drop=True)

    def unlabelled(self, rels: Iterable[str]) -> pd.DataFrame:
        """Skipped entries for image files that no label row names."""
        found = [self.key(rel) for rel in rels]
        return pd.DataFrame({"file_key": found, "reason": [NO_LABEL] * len(found)}, columns=SKIPPED_COLUMNS)

    def dataset(self, rows: Iterable[int]) -> PreparedDataset:
        return PreparedDataset(self.prepared, indices=np.asarray(list(rows), dtype=np.int64))


def prepare_images(
    adapter: str,
    root: Path,
    image_size: int,
    keep: Iterable[str] | None = None,
    identify: Callable[[str, Any], tuple[str | None, str | None]] | None = None,
    modality: str | None = None,
) -> TaskImages:
    """Prepare the files ``keep`` (relative paths; None = all) of ``root`` at ``image_size`` for a task."""
    root = root.resolve()
    selected = frozenset(keep) if keep is not None else None
    selection = fingerprint(sorted(selected)) if selected is not None else "all"
    ident = fingerprint(
        root.as_posix(), image_size, modality, selection, repr(getattr(identify, "__self__", None))
    )[:12]
    prepared = cache_root() / "tasks" / f"{adapter}-{ident}"
    ensure_prepared(
        root,
        prepared,
        label=f"task '{adapter}'",
        image_size=image_size,
        modality=modality,
        identify=identify,
        include=None if selected is None else selected.__contains__,
        settings={"selection": selection},
        files=selected,
    )
    state = read_state(prepared) or {}
    return TaskImages(prepared, keys.dataset_secret(read_info(prepared)), str(state.get("digest", "")))


def findings_task(
    name: str,
    images: TaskImages,
    table: pd.DataFrame,
    findings: list[str],
    *,
    uncertain: str,
    image_size: int,
    groups: Callable[[pd.DataFrame], pd.DataFrame],
    info: dict[str, Any],
    unlabelled: Iterable[str] = (),
) -> Task:
    """A multi-label chest X-ray findings task from a label table (``rel``, ``_split``, one column per finding,
    1 / 0 / -1 uncertain / blank): the shape CheXpert and MIMIC-CXR share. Labels follow the uncertain-label
    policy (``uncertain_labels``); images without a label row or that could not be read land in ``skipped``."""
    joined, skipped = images.attach(table)
    y, mask = uncertain_labels(joined[findings].to_numpy(np.float32), uncertain)
    return Task(
        name=name,
        dataset=images.dataset(joined["row"]),
        labels=y,
        kind="multilabel",
        class_names=findings,
        patients=joined["patient_key"].to_numpy(str),
        groups=groups(joined),
        split=joined["_split"].to_numpy(str),
        fingerprint=fingerprint(
            name, images.digest, joined["file_key"].tolist(), findings, uncertain, image_size
        ),
        label_mask=mask,
        info={**info, "uncertain": uncertain},
        skipped=pd.concat([skipped, images.unlabelled(list(unlabelled))], ignore_index=True),
    )
