"""``--data`` entries (prepared sources or labelled tasks) and a seeded sample of images per domain from them.

Domains: a source that mixes modalities is split by modality (CT → "CT slices", CR/DX → "X-ray"), the
``natural`` source is "natural photos", anything else is named after its source; a label that two ``--data``
entries share gets the entry's name appended, so every domain stays one source's images. The sample's
fingerprint identifies exactly the chosen images, so its features are cached like a task's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from ssl_radiology.errors import UserError

MODALITY_DOMAINS = {"CT": "CT slices", "CR": "X-ray", "DX": "X-ray", "MG": "mammography", "MR": "MR slices"}
NATURAL_DOMAIN = "natural photos"


@dataclass
class DomainSample:
    """Images from one or more ``--data`` entries with a domain label each.

    ``dataset`` items are ``{"image", "index", "modality"}`` like a ``PreparedDataset``; ``fingerprint``
    identifies exactly these images (feature-cache key), like ``Task.fingerprint``.
    """

    dataset: Dataset
    domains: np.ndarray
    fingerprint: str
    name: str

    def counts(self) -> dict[str, int]:
        names, counts = np.unique(self.domains, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts, strict=True)}


@dataclass
class DataEntry:
    """One ``--data`` entry opened: a prepared source (``NAME[:MODALITY]`` or folder) or a labelled task.

    ``fingerprint`` identifies all its images (the feature-cache key part, ``Task.fingerprint`` for a task);
    ``task`` is the :class:`~ssl_radiology.evaluation.tasks.Task` (labels, patients, split) or None.
    """

    entry: str
    dataset: Dataset
    modalities: list[str]
    identity: Any
    fingerprint: str
    kind: str  # "task", "natural", "phantom", ... (the data config's kind) or "folder"
    task: Any = None


def _is_source(entry: str) -> bool:
    from ssl_radiology.config import available
    from ssl_radiology.data.prepare import INFO_FILE
    from ssl_radiology.data.sources import split_selector

    name, _ = split_selector(entry)
    return name in available("data") or (Path(name).expanduser() / INFO_FILE).is_file()


def _source_entry(entry: str) -> DataEntry:
    from ssl_radiology.config import available, load_group
    from ssl_radiology.data.prepared import read_info
    from ssl_radiology.data.sources import open_source, split_selector
    from ssl_radiology.evaluation.tasks import fingerprint

    name, modalities = split_selector(entry)
    dataset = open_source(entry)
    kind = str(load_group("data", name).get("kind")) if name in available("data") else "folder"
    identity = {"info": read_info(dataset.root), "modalities": modalities}
    return DataEntry(
        entry,
        dataset,
        dataset.manifest["modality"].astype(str).tolist(),
        identity,
        fingerprint("source", identity),
        kind,
    )


def _task_entry(name: str, image_size: int) -> DataEntry:
    from ssl_radiology.config import available
    from ssl_radiology.evaluation.tasks import load_task

    try:
        task = load_task(name, image_size)
    except UserError as exc:
        raise UserError(
            f"--data {name}: not a data source ({', '.join(available('data'))}) and {exc}"
        ) from exc
    manifest = getattr(task.dataset, "manifest", None)
    if manifest is None or "modality" not in manifest:
        modalities = [str(task.dataset[i]["modality"]) for i in range(len(task.dataset))]
    else:
        modalities = manifest["modality"].astype(str).tolist()
    return DataEntry(name, task.dataset, modalities, task.fingerprint, task.fingerprint, "task", task)


def open_entry(entry: str, image_size: int) -> DataEntry:
    """A prepared source when ``entry`` names one (a data config or a prepared folder), else a task."""
    return _source_entry(entry) if _is_source(entry) else _task_entry(entry, image_size)


def _domain_labels(entry: str, modalities: Sequence[str], kind: str) -> np.ndarray:
    if kind == "natural":
        return np.full(len(modalities), NATURAL_DOMAIN, dtype=object)
    labels = [MODALITY_DOMAINS.get(m.upper(), "") for m in modalities]
    fallback = Path(entry).name or entry
    return np.array([label or fallback for label in labels], dtype=object)


class _AtSize(Dataset):
    """Items resized to the model input size, so that sources prepared at different sizes (radnet at 256 px,
    natural at 128 px) can share a batch; the same antialiased resize the evaluation transform applies."""

    def __init__(self, dataset: Dataset, size: int) -> None:
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        from ssl_radiology.transforms.intensity import resize

        item = self.dataset[i]
        return {**item, "image": resize(item["image"], self.size)}


def sample_domains(data: Sequence[str], image_size: int, max_per_domain: int, seed: int = 0) -> DomainSample:
    """At most ``max_per_domain`` images per domain (seeded, kept in dataset order) from all ``data`` entries."""
    from ssl_radiology.evaluation.tasks import fingerprint

    if not data:
        raise UserError("give at least one --data source")
    if max_per_domain < 2:
        raise UserError(f"--max-samples must be at least 2 per domain, got {max_per_domain}")
    rng = np.random.default_rng(seed)
    parts = []
    for entry in data:
        opened = open_entry(entry, image_size)
        if len(opened.dataset) == 0:
            raise UserError(f"--data {entry}: no images")
        labels = _domain_labels(entry, opened.modalities, opened.kind)
        parts.append((entry, opened.dataset, labels, opened.identity))
    owners: dict[str, set[str]] = {}
    for entry, _, labels, _ in parts:
        for label in set(labels):
            owners.setdefault(label, set()).add(entry)
    subsets, domains, identities = [], [], []
    for entry, dataset, labels, identity in parts:
        labels = np.array([f"{x} ({entry})" if len(owners[x]) > 1 else x for x in labels], dtype=object)
        rows = []
        for label in sorted(set(labels)):
            members = np.flatnonzero(labels == label)
            if len(members) > max_per_domain:
                members = np.sort(rng.choice(members, max_per_domain, replace=False))
            rows.append(members)
        chosen = np.sort(np.concatenate(rows))
        subsets.append(_AtSize(Subset(dataset, chosen.tolist()), image_size))
        domains.append(labels[chosen])
        identities.append([identity, chosen.tolist()])
    return DomainSample(
        dataset=ConcatDataset(subsets),
        domains=np.concatenate(domains).astype(str),
        fingerprint=fingerprint("analysis-sample", identities),
        name=" + ".join(data),
    )
