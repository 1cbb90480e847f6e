"""One input file → stored slices + manifest rows, in a worker process; and the pool that runs the workers.

Everything a worker needs travels in a :class:`Job` (picklable: the ``identify`` hook must be a module-level
function or a picklable object). A failure of any kind becomes a ``reason`` in ``rejected.csv`` — one bad
file never aborts a run of millions — and the reason is scrubbed of the file's path and folder names
(:func:`scrub`), because exception texts from pydicom, nibabel or Pillow often quote the path, and paths of
real datasets embed patient IDs and names.

Identity: the patient key comes from ``identify(rel, slice)`` when given (dataset-specific IDs: CheXpert's
patient folder, NIH's Patient ID, MIMIC's subject), else the DICOM Patient ID, else — for files without
IDs (PNG, NIfTI) — the key of the path without its suffix (``ct_nifti/CASE003.nii.gz`` → ``ct_nifti/CASE003``)
as patient, study and series: every slice of one volume shares it. All keys are HMACs (:mod:`.keys`).

Worker processes die with their parent: the pool initializer asks the kernel (``prctl(PR_SET_PDEATHSIG)``)
to send them SIGKILL when the process that started them dies, so a ``kill -9`` of ``prepare`` does not
leave decoders running.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssl_radiology.data import keys
from ssl_radiology.data.layout import extension
from ssl_radiology.data.pixels import to_stored

Identify = Callable[[str, Any], "tuple[str | None, str | None]"]
_PR_SET_PDEATHSIG = 1
_SUFFIXES = (
    ".nii.gz",
    ".nii",
    ".dcm",
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".npz",
    ".nrrd",
    ".mha",
    ".mhd",
)


@dataclass(frozen=True)
class Job:
    """One input file, with everything a worker process needs to turn it into stored slices."""

    root: int
    path: str
    rel: str
    image_size: int
    modality: str | None
    secret: str
    max_bytes: int | None
    identify: Identify | None = None


@dataclass
class FileResult:
    root: int
    file_key: str
    ext: str
    images: list[np.ndarray] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None


def path_stem(rel: str) -> str:
    """Stand-in identity for files without IDs: the relative path without its (possibly double) suffix."""
    lower = rel.lower()
    return next((rel[: -len(s)] for s in _SUFFIXES if lower.endswith(s)), rel)


def scrub(text: str, path: str, rel: str) -> str:
    """``text`` without the file's path: every absolute prefix of it (the source folder itself may be named
    after a patient), and each folder / file name below the source root as a whole word."""
    prefixes = {str(p) for real in (Path(path), Path(os.path.realpath(path))) for p in (real, *real.parents)}
    for prefix in sorted((p for p in prefixes if len(p) > 1), key=len, reverse=True):
        text = text.replace(prefix, "<file>")
    for name in sorted({rel, *rel.split("/")} - {""}, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", "<file>", text)
    return text


def describe(exc: BaseException, path: str, rel: str) -> str:
    """One line saying why a file gave no slices, safe to store (see :func:`scrub`)."""
    reason = getattr(exc, "reason", None)
    if not reason:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    # an undecodable byte left in a reason (a tag value, say) would make the CSV writer fail: escape it
    return scrub(str(reason), path, rel).encode("utf-8", "backslashreplace").decode("utf-8")


def process_file(job: Job) -> FileResult:
    """Decode one file into stored images + manifest rows; any failure becomes a reason, never an abort."""
    from ssl_radiology.io import read_slices

    file_key, ext = keys.file_key(job.rel, job.secret), extension(job.rel)
    result = FileResult(root=job.root, file_key=file_key, ext=ext)
    try:
        slices = read_slices(job.path, modality=job.modality, max_bytes=job.max_bytes)
        if not slices:
            raise ValueError("no image slices")
        fallback = keys.patient_key(f"path:{path_stem(job.rel)}", job.secret)
        for sl in slices:
            patient, study = job.identify(job.rel, sl) if job.identify else (None, None)
            patient, study = patient or sl.patient_id, study or sl.study_uid
            modality = (sl.modality or job.modality or "OT").upper()
            stored, row_scale, col_scale = to_stored(sl.pixels, modality, job.image_size)
            spacing = sl.spacing or (float("nan"), float("nan"))
            attrs = sl.attributes or {}
            result.images.append(stored)
            result.rows.append(
                {
                    "modality": modality,
                    "root": job.root,
                    "file_key": file_key,
                    "ext": ext,
                    "slice_index": int(sl.index),
                    "patient_key": keys.patient_key(patient, job.secret) if patient else fallback,
                    "study_key": keys.study_key(study, job.secret) if study else fallback,
                    "series_key": keys.series_key(sl.series_uid, job.secret) if sl.series_uid else fallback,
                    "spacing_row": float(spacing[0]) / row_scale,
                    "spacing_col": float(spacing[1]) / col_scale,
                    "sex": attrs.get("sex") or None,
                    "age_band": attrs.get("age_band") or None,
                    "site": attrs.get("site") or None,
                }
            )
    except Exception as exc:  # one bad file must never abort a run of millions: record why and go on
        return FileResult(root=job.root, file_key=file_key, ext=ext, reason=describe(exc, job.path, job.rel))
    return result


def _die_with_parent(parent: int) -> None:
    """Pool initializer: SIGKILL this worker when its parent dies (Linux), or exit if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)


def executor_map(
    workers: int, chunk_files: int
) -> tuple[Executor | None, Callable[[list[Job]], Iterator[FileResult]]]:
    """In-process ``map`` for 0/1 workers, else a process pool handing out small batches of files."""
    if workers <= 1:
        return None, lambda jobs: map(process_file, jobs)
    # import the readers once here: forked workers inherit them instead of each paying the import. Workers
    # run no torch (the resize is scipy.sparse), so there is no intra-op thread pool to limit.
    importlib.import_module("ssl_radiology.io")
    executor = ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent, initargs=(os.getpid(),))
    chunksize = max(1, min(16, chunk_files // (workers * 4)))  # ≥ 4 batches per worker per chunk
    return executor, lambda jobs: executor.map(process_file, jobs, chunksize=chunksize)
