"""``ssl-rad prepare``: decode DICOM / NIfTI / PNG sources once into fixed-size, memory-mapped slice shards.

Decisions (and why):

* **Geometry.** Each slice is resized so that its *longer* side is ``image_size`` (aspect kept) and the
  shorter side is padded, centred, with the background: -1024 HU for CT, 0 for everything else. Padding
  rather than centre-cropping keeps the whole anatomy (a crop can cut off a lung apex or a lesion at the
  edge). Resizing is bilinear with antialiasing, the filter of ``torch.nn.functional.interpolate(
  antialias=True)``, done as two scipy.sparse products (:func:`fit_to_square`: ~0.45 ms for 512² → 256² on
  one core, half of torch's time; PIL's triangle filter is slower still and scikit-image 6× slower).
  ``spacing_row`` / ``spacing_col`` in the manifest are the mm per pixel *after* resizing.
* **Values.** CT is stored as int16 HU clipped to [-1024, 3071] (the 12-bit CT range; air and metal beyond
  it carry no tissue information). Every other modality has no absolute unit, so each image is stretched
  min–max to 0..65535 and stored as uint16 (after the reader's MONOCHROME1 inversion, so higher = brighter);
  an image without contrast (constant) is rejected because the stretch is undefined.
* **Modality.** ``modality=`` is handed to the reader for files that carry none (PNG, NIfTI); it never
  overrides a DICOM's own Modality and does not filter (select modalities later with
  ``PreparedDataset(modality=...)``).
* **Identifiers.** Patient / study / series ids are stored only as salted hashes (:mod:`.keys`). Files
  without ids (PNG, NIfTI) get the hash of their source path relative to its SRC without the suffix
  (``ct_nifti/CASE003.nii.gz`` → ``ct_nifti/CASE003``) as patient, study and series key: every slice of one
  volume shares a key, and nothing else is known about who the patient is.
* **Resumability.** The sorted list of input files is cut into fixed chunks (``chunk_files``). A chunk
  writes its shards, then ``parts/chunk-XXXXX.parquet`` (its manifest rows), then ``parts/chunk-XXXXX.json``
  (rejected files, a digest of its inputs' names/sizes/mtimes, the shard sizes): it counts as done only when
  that JSON exists and still matches the inputs and shards on disk. Every file is written under a temporary
  name and renamed, so a killed run leaves nothing that a later run or :class:`PreparedDataset` trusts;
  ``manifest.parquet`` and a ``prepared.json`` with ``"complete": true`` appear only when all chunks are done.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse
from filelock import FileLock, Timeout

from ssl_radiology.data import shards
from ssl_radiology.data.keys import SALT_FILE, hash_key, resolve_salt, salt_fingerprint
from ssl_radiology.errors import UserError

FORMAT_VERSION = 1
CHUNK_FILES = 512
CT_RANGE = (-1024, 3071)
UINT16_MAX = 65535
INFO_FILE = "prepared.json"
MANIFEST_FILE = "manifest.parquet"
REJECTED_FILE = "rejected.csv"
LOCK_FILE = ".prepare.lock"
MANIFEST_COLUMNS = [
    "shard", "offset", "modality", "root", "source", "slice_index", "patient_key", "study_key",
    "series_key", "spacing_row", "spacing_col", "sex", "age_band", "site",
]  # fmt: skip
MANIFEST_DTYPES = {"offset": "int64", "root": "int64", "slice_index": "int64"}


@dataclass
class PrepareSummary:
    """What one ``prepare`` call produced (counts cover the whole dataset, resumed chunks included)."""

    out: Path
    slices: int
    files: int
    rejected: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    slices_by_modality: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    chunks_processed: int = 0


@dataclass(frozen=True)
class _Job:
    """One input file, with everything a worker process needs to turn it into stored slices."""

    root: int
    path: str
    rel: str
    image_size: int
    modality: str | None
    salt: str


@dataclass
class _FileResult:
    root: int
    rel: str
    images: list[np.ndarray] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None


# ----------------------------------------------------------------------------------------------- pixels
@functools.lru_cache(maxsize=64)
def resize_weights(n_in: int, n_out: int) -> scipy.sparse.csr_matrix:
    """(n_out × n_in) sparse matrix of antialiased bilinear (triangle filter) weights along one axis.

    The same filter as ``torch.nn.functional.interpolate(mode="bilinear", antialias=True,
    align_corners=False)``: output pixel ``i`` is centred at ``(i + 0.5) * scale`` input pixels, the
    triangle is stretched by ``scale = n_in / n_out`` when shrinking (so it averages every input pixel it
    covers: antialiasing) and is plain linear interpolation when enlarging; weights that fall outside the
    image are dropped and the rest renormalised. The weights are computed in float64 (torch uses float32,
    so results agree to ~1e-5 of the value; the tests pin the agreement). Cached: a corpus has few sizes.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)  # half-width of the triangle, in input pixels
    centers = scale * (np.arange(n_out) + 0.5)
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    last = np.minimum((centers + support + 0.5).astype(np.int64), n_in)
    taps = int((last - first).max())
    columns = first[:, None] + np.arange(taps)[None, :]
    weights = np.clip(1.0 - np.abs(columns - centers[:, None] + 0.5) / support, 0.0, None)
    weights[columns >= last[:, None]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    matrix = scipy.sparse.csr_matrix(
        (
            weights.astype(np.float32).ravel(),
            (np.repeat(np.arange(n_out), taps), np.minimum(columns, n_in - 1).ravel()),
        ),
        shape=(n_out, n_in),
    )
    matrix.eliminate_zeros()
    return matrix


def fit_to_square(pixels: np.ndarray, size: int) -> tuple[np.ndarray, float, float]:
    """Resize (antialiased bilinear) so the longer side is ``size``; returns (image, row scale, col scale).

    The result is *not* padded yet; callers pad with their background after converting the values, so
    the padding never takes part in a min–max stretch. The resize is two sparse matrix products (rows,
    then columns) with :func:`resize_weights`: each output pixel touches only the few inputs under its
    filter, which takes half the time of torch's ``interpolate`` on one core (512² → 256²: ~0.45 vs ~1 ms)
    and needs no torch in the worker processes.
    """
    rows, cols = pixels.shape
    scale = size / max(rows, cols)
    new_rows, new_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    if (new_rows, new_cols) == (rows, cols):
        return np.array(pixels, dtype=np.float32), 1.0, 1.0  # a copy: callers convert it in place
    vertical = resize_weights(rows, new_rows) @ np.ascontiguousarray(pixels, dtype=np.float32)
    # scipy multiplies C-ordered rows only: transpose the (smaller) intermediate once, and hand back the
    # result as a transposed view (callers convert and stack it, which copies anyway).
    resized = resize_weights(cols, new_cols) @ np.ascontiguousarray(vertical.T)
    return resized.T, new_rows / rows, new_cols / cols


def pad_to_square(image: np.ndarray, size: int, background: float) -> np.ndarray:
    """Centre ``image`` on a ``size``² canvas filled with ``background`` (same dtype)."""
    if image.shape == (size, size):
        return image
    canvas = np.full((size, size), background, dtype=image.dtype)
    top, left = (size - image.shape[0]) // 2, (size - image.shape[1]) // 2
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    return canvas


def to_stored(pixels: np.ndarray, modality: str, size: int) -> tuple[np.ndarray, float, float]:
    """Physical values → the stored ``size``² int16 (CT, HU) or uint16 (others, 0..65535) image.

    Non-finite values are looked for after resizing (4× fewer pixels at 512² → 256²): every input pixel
    has a positive weight in some output pixel, so a NaN or infinity always reaches the resized image.
    """
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ValueError(f"not a 2-D image (shape {pixels.shape})")
    image, row_scale, col_scale = fit_to_square(pixels, size)
    if not np.isfinite(image).all():
        raise ValueError("non-finite pixel values")
    if modality == "CT":
        np.clip(image, *CT_RANGE, out=image)
        # order="C": the resized image is a transposed view, and shards must stack C-ordered images (a
        # mixed-order stack makes np.save fall back to slow chunked writing)
        stored = np.rint(image, out=image).astype(np.int16, order="C")
        return pad_to_square(stored, size, CT_RANGE[0]), row_scale, col_scale
    low, high = float(image.min()), float(image.max())
    if high <= low:
        raise ValueError("constant image (no contrast to stretch)")
    stretched = np.rint((image - low) * (UINT16_MAX / (high - low))).astype(np.uint16, order="C")
    return pad_to_square(stretched, size, 0), row_scale, col_scale


# ----------------------------------------------------------------------------------------------- workers
def _path_key(rel: str) -> str:
    """Stand-in identity for files without ids: the relative path without its (possibly double) suffix."""
    name = rel
    for suffix in (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _process_file(job: _Job) -> _FileResult:
    """Decode one file into stored images + manifest rows; any failure becomes a reason, never an abort."""
    from ssl_radiology.io import read_slices

    result = _FileResult(root=job.root, rel=job.rel)
    try:
        slices = read_slices(job.path, modality=job.modality)
        if not slices:
            raise ValueError("no image slices")
        fallback = hash_key(f"path:{_path_key(job.rel)}", job.salt)
        for sl in slices:
            modality = (sl.modality or job.modality or "OT").upper()
            stored, row_scale, col_scale = to_stored(sl.pixels, modality, job.image_size)
            spacing = sl.spacing or (float("nan"), float("nan"))
            attrs = sl.attributes or {}
            result.images.append(stored)
            result.rows.append(
                {
                    "modality": modality,
                    "root": job.root,
                    "source": job.rel,
                    "slice_index": int(sl.index),
                    "patient_key": hash_key(sl.patient_id, job.salt) if sl.patient_id else fallback,
                    "study_key": hash_key(sl.study_uid, job.salt) if sl.study_uid else fallback,
                    "series_key": hash_key(sl.series_uid, job.salt) if sl.series_uid else fallback,
                    "spacing_row": float(spacing[0]) / row_scale,
                    "spacing_col": float(spacing[1]) / col_scale,
                    "sex": attrs.get("sex") or None,
                    "age_band": attrs.get("age_band") or None,
                    "site": attrs.get("site") or None,
                }
            )
    except Exception as exc:  # one bad file must never abort a run of millions: record why and go on
        return _FileResult(root=job.root, rel=job.rel, reason=_describe(exc))
    return result


# ----------------------------------------------------------------------------------------------- layout
def _chunk_name(index: int) -> str:
    return f"chunk-{index:05d}"


def _shard_path(out: Path, index: int, dtype: str) -> Path:
    return out / "shards" / f"{_chunk_name(index)}-{dtype}.npy"


def _marker_path(out: Path, index: int) -> Path:
    return out / "parts" / f"{_chunk_name(index)}.json"


def _rows_path(out: Path, index: int) -> Path:
    return out / "parts" / f"{_chunk_name(index)}.parquet"


def _walk(roots: Sequence[Path], out: Path) -> list[tuple[int, Path, str]]:
    """(root index, file, path relative to its root) for every readable unit, in a deterministic order.

    Files under ``out`` are skipped, so that ``--out`` may live inside a source folder.
    """
    from ssl_radiology.io import find_sources

    units: list[tuple[int, Path, str]] = []
    for index, root in enumerate(roots):
        found = []
        for path in find_sources(root):
            if path.parts[: len(out.parts)] == out.parts:  # ``out`` or below (cheaper than path.parents)
                continue
            rel = path.name if root.is_file() else path.relative_to(root).as_posix()
            found.append((index, path, rel))
        units.extend(sorted(found, key=lambda unit: unit[2]))
    return units


def _digest(units: Sequence[tuple[int, Path, str]]) -> str:
    """Identity of a chunk's inputs: names, sizes and modification times (a changed file redoes its chunk)."""
    sha = hashlib.sha256()
    for root, path, rel in units:
        try:
            stat = path.stat()
            sha.update(f"{root}\t{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:
            sha.update(f"{root}\t{rel}\tmissing\n".encode())
    return sha.hexdigest()


def _chunk_is_done(out: Path, index: int, digest: str) -> bool:
    marker = _marker_path(out, index)
    if not marker.is_file() or not _rows_path(out, index).is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if info.get("digest") != digest:
        return False
    for dtype, size in info.get("shards", {}).items():
        path = _shard_path(out, index, dtype)
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def _write_chunk(out: Path, index: int, digest: str, results: Sequence[_FileResult]) -> None:
    """Shards first, then the chunk's manifest rows, then the marker that makes the chunk count as done."""
    _marker_path(out, index).unlink(missing_ok=True)
    rows: list[dict[str, Any]] = []
    by_dtype: dict[str, list[np.ndarray]] = {"int16": [], "uint16": []}
    for result in results:
        for image, row in zip(result.images, result.rows, strict=True):
            dtype = image.dtype.name
            row = {
                **row,
                "shard": _shard_path(out, index, dtype).relative_to(out).as_posix(),
                "offset": len(by_dtype[dtype]),
            }
            by_dtype[dtype].append(image)
            rows.append(row)
    sizes: dict[str, int] = {}
    for dtype, images in by_dtype.items():
        path = _shard_path(out, index, dtype)
        if images:
            sizes[dtype] = shards.save_array(path, np.stack(images))
        else:
            path.unlink(missing_ok=True)
    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).astype(MANIFEST_DTYPES)
    shards.save_parquet(_rows_path(out, index), frame)
    rejected = [[r.rel, r.reason, r.root] for r in results if r.reason is not None]
    shards.save_json(_marker_path(out, index), {"digest": digest, "shards": sizes, "rejected": rejected})


# ----------------------------------------------------------------------------------------------- driver
def _require_empty(out: Path) -> None:
    """A new dataset goes into an empty folder: never mix shards into an unrelated directory."""
    ignored = {LOCK_FILE, SALT_FILE}
    leftovers = sorted(p.name for p in out.iterdir() if p.name not in ignored)
    if leftovers:
        raise UserError(
            f"{out} is not empty and holds no {INFO_FILE} (found {', '.join(leftovers[:5])}); "
            "choose a new --out folder"
        )


def _check_config(out: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Refuse to mix two different preparations in one folder (sizes, sources or salts would not match)."""
    info_path = out / INFO_FILE
    try:
        previous = json.loads(info_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{info_path}: unreadable ({exc}); delete {out} and prepare again") from exc
    for key, label in (
        ("format_version", "format version"),
        ("image_size", "--image-size"),
        ("sources", "sources"),
        ("modality", "--modality"),
        ("chunk_files", "chunk size"),
    ):
        if previous.get(key) != config[key]:
            raise UserError(
                f"{out} was prepared with {label} {previous.get(key)!r}, not {config[key]!r}; "
                "use a new --out folder (or the original settings to resume)"
            )
    if previous.get("salt_fingerprint") != config["salt_fingerprint"]:
        raise UserError(
            f"{out} was prepared with a different salt; pass the same --salt (or $SSL_RAD_SALT) to resume"
        )
    return previous


def _combine(out: Path, n_chunks: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames = [pd.read_parquet(_rows_path(out, i)) for i in range(n_chunks)]
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MANIFEST_COLUMNS)
    rejected: list[list[Any]] = []
    for i in range(n_chunks):
        rejected.extend(json.loads(_marker_path(out, i).read_text())["rejected"])
    return manifest.astype(MANIFEST_DTYPES), pd.DataFrame(rejected, columns=["path", "reason", "root"])


def _remove_stale_chunks(out: Path, n_chunks: int) -> None:
    """Chunks numbered beyond the current input list (files were removed) must not linger."""
    for folder in (out / "shards", out / "parts"):
        for path in folder.glob("chunk-*"):
            if int(path.name.split("-")[1].split(".")[0]) >= n_chunks:
                path.unlink()


def _executor_map(
    workers: int, chunk_files: int
) -> tuple[Executor | None, Callable[[list[_Job]], Iterator[_FileResult]]]:
    """In-process ``map`` for 0/1 workers, else a process pool handing out small batches of files."""
    if workers <= 1:
        return None, lambda jobs: map(_process_file, jobs)
    # import the readers once here: forked workers inherit them instead of each paying the import. Workers
    # run no torch (the resize is scipy.sparse), so there is no intra-op thread pool to limit.
    importlib.import_module("ssl_radiology.io")
    executor = ProcessPoolExecutor(max_workers=workers)
    chunksize = max(1, min(16, chunk_files // (workers * 4)))  # ≥ 4 batches per worker per chunk
    return executor, lambda jobs: executor.map(_process_file, jobs, chunksize=chunksize)


def _available_cores() -> int:
    """Cores this process may run on (a container or ``taskset`` often allows fewer than ``cpu_count``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def prepare_dataset(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    image_size: int = 256,
    workers: int | None = None,
    modality: str | None = None,
    salt: str | None = None,
    chunk_files: int = CHUNK_FILES,
    progress: bool = True,
) -> PrepareSummary:
    """Decode every file under ``sources`` into ``out`` (see the module docstring); resumes finished chunks.

    ``workers``: processes decoding in parallel (default: the usable cores; 0 or 1 decode in-process).
    """
    roots = [Path(sources)] if isinstance(sources, (str, os.PathLike)) else [Path(s) for s in sources]
    if not roots:
        raise UserError("prepare needs at least one source folder or file")
    missing = [str(r) for r in roots if not r.exists()]
    if missing:
        raise UserError(f"source not found: {', '.join(missing)}")
    if image_size < 8:
        raise UserError(f"--image-size must be at least 8 pixels, got {image_size}")
    roots = [r.resolve() for r in roots]
    out = Path(out).resolve()
    workers = _available_cores() if workers is None else workers
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = FileLock(str(out / LOCK_FILE), timeout=0)
        lock.acquire()
    except Timeout as exc:
        raise UserError(f"another 'ssl-rad prepare' is writing {out}; wait for it to finish") from exc
    try:
        return _prepare_locked(roots, out, image_size, workers, modality, salt, chunk_files, progress)
    finally:
        lock.release()


def _prepare_locked(
    roots: list[Path],
    out: Path,
    image_size: int,
    workers: int,
    modality: str | None,
    salt: str | None,
    chunk_files: int,
    progress: bool,
) -> PrepareSummary:
    from tqdm import tqdm

    info_exists = (out / INFO_FILE).is_file()
    if not info_exists:
        _require_empty(out)
    salt_value = resolve_salt(out, salt)
    config = {
        "format_version": FORMAT_VERSION,
        "image_size": image_size,
        "sources": [r.as_posix() for r in roots],
        "modality": modality,
        "chunk_files": chunk_files,
        "salt_fingerprint": salt_fingerprint(salt_value),
    }
    previous = _check_config(out, config) if info_exists else {}
    shards.remove_temporaries(out)
    units = _walk(roots, out)
    if not units:
        raise UserError(
            f"no image files found under {', '.join(map(str, roots))} (DICOM, NIfTI, PNG, JPEG, TIFF)"
        )
    chunks = [units[i : i + chunk_files] for i in range(0, len(units), chunk_files)]
    digests = [_digest(chunk) for chunk in chunks]
    pending = [i for i, d in enumerate(digests) if not _chunk_is_done(out, i, d)]
    if pending or not previous.get("complete") or not (out / MANIFEST_FILE).is_file():
        shards.save_json(out / INFO_FILE, {**config, "complete": False})
        (out / MANIFEST_FILE).unlink(missing_ok=True)
        (out / REJECTED_FILE).unlink(missing_ok=True)
        (out / "shards").mkdir(exist_ok=True)
        (out / "parts").mkdir(exist_ok=True)
        _run_chunks(out, chunks, digests, pending, image_size, modality, salt_value, workers, progress, tqdm)
        _remove_stale_chunks(out, len(chunks))
        manifest, rejected = _combine(out, len(chunks))
        shards.save_parquet(out / MANIFEST_FILE, manifest)
        shards.save_csv(out / REJECTED_FILE, rejected)
        info = {
            **config,
            "complete": True,
            "files": len(units),
            "slices": len(manifest),
            "rejected": len(rejected),
            "slices_by_modality": {str(k): int(v) for k, v in manifest["modality"].value_counts().items()},
            "rejected_by_reason": {str(k): int(v) for k, v in Counter(rejected["reason"]).most_common()},
        }
        shards.save_json(out / INFO_FILE, info)
    else:
        info = previous
    return PrepareSummary(
        out=out,
        slices=info["slices"],
        files=info["files"],
        rejected=info["rejected"],
        rejected_by_reason=info["rejected_by_reason"],
        slices_by_modality=info["slices_by_modality"],
        chunks=len(chunks),
        chunks_processed=len(pending),
    )


def _run_chunks(
    out: Path,
    chunks: list[list[tuple[int, Path, str]]],
    digests: list[str],
    pending: list[int],
    image_size: int,
    modality: str | None,
    salt: str,
    workers: int,
    progress: bool,
    tqdm: Any,
) -> None:
    """Decode pending chunks with a bounded look-ahead, writing each chunk as soon as its files are back."""

    def jobs(index: int) -> list[_Job]:
        return [_Job(r, str(p), rel, image_size, modality, salt) for r, p, rel in chunks[index]]

    if not pending:
        return
    executor, run = _executor_map(workers, max(len(chunk) for chunk in chunks))
    bar = tqdm(total=sum(len(chunks[i]) for i in pending), unit="file", disable=not progress, desc="prepare")
    in_flight: deque[tuple[int, Iterable[_FileResult]]] = deque()
    queue = deque(pending)
    look_ahead = 2 if executor is not None else 1
    try:
        while queue or in_flight:
            while queue and len(in_flight) < look_ahead:
                index = queue.popleft()
                in_flight.append((index, run(jobs(index))))
            index, results_iter = in_flight.popleft()
            results = []
            for result in results_iter:
                results.append(result)
                bar.update(1)
            _write_chunk(out, index, digests[index], results)
    except BrokenProcessPool as exc:
        first, last = chunks[index][0][2], chunks[index][-1][2]
        raise UserError(
            f"a decoder process crashed while preparing files {first} … {last}; finished chunks are kept. "
            "Run again with --workers 1 to find the file that crashes the decoder"
        ) from exc
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown(cancel_futures=True)
