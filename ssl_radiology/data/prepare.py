"""``ssl-rad prepare``: decode DICOM / NIfTI / PNG sources once into fixed-size, memory-mapped slice shards.

The work is split into modules with one job each: :mod:`.plan` (which paths, cut into numbered chunks and
parts), :mod:`.decode` (one file → stored slices, in pool workers that die with their parent),
:mod:`.pixels` (the geometry / value policy), :mod:`.assemble` (chunk and dataset files, checksums),
:mod:`.layout` (file names and what makes a chunk trusted). This module checks the options, takes the
locks and drives the chunks.

Decisions (and why):

* **Modality.** ``modality=`` is handed to the reader for files that carry none (PNG, NIfTI); it never
  overrides a DICOM's own Modality and does not filter (select modalities later with
  ``PreparedDataset(modality=...)``).
* **No identifiers in clear.** Keys are HMACs with the installation secret (:mod:`.keys`); the manifest and
  ``rejected.csv`` hold a file key and a known extension instead of the path; rejection reasons are scrubbed
  of paths. ``keep_paths`` writes the key → path map to ``paths.csv``, with a warning.
* **Every path accounted for.** A path that cannot be read (unreadable folder, FIFO, broken or looping
  link) is a ``rejected.csv`` row, like a file that does not decode.
* **Resumable and verified.** A chunk counts as done only when its marker matches the inputs and the files
  on disk; re-running re-checks sizes (all files) and the manifest, and redoes what is damaged;
  ``verify=True`` compares every checksum. A killed run leaves nothing that a later run trusts.
* **Options are checked before any work** (nothing is created for a bad option).
* **Bounded memory.** Each file is refused before decoding when its header claims more than ``max_image_mb``
  (default: available memory / workers / 4, :mod:`ssl_radiology.io.limits`).
* **Sharded.** ``shard=(I, N)`` prepares only chunks ``c ≡ I (mod N)`` and leaves the dataset incomplete;
  ``merge=True`` checks that every chunk is done and writes the dataset-wide files. Parts may run at the
  same time on one folder (a shared file system): each holds its own lock; a full run or merge holds them all.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from ssl_radiology.data import keys, shards
from ssl_radiology.data.assemble import dataset_damage, finalize, problem_result, write_chunk, write_paths
from ssl_radiology.data.decode import FileResult, Identify, Job, executor_map
from ssl_radiology.data.layout import (  # the file names are re-exported: callers know them from here
    CHUNK_FILES,
    FORMAT_VERSION,
    INFO_FILE,
    LOCK_FILE,
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    MODALITIES,
    REJECTED_FILE,
    chunk_damage,
    chunk_index,
)
from ssl_radiology.data.plan import Unit, chunked, digest, part_chunks, walk
from ssl_radiology.errors import UserError
from ssl_radiology.io.limits import MB, default_limit

__all__ = [
    "CHUNK_FILES", "FORMAT_VERSION", "INFO_FILE", "MANIFEST_COLUMNS", "MANIFEST_FILE", "MODALITIES",
    "REJECTED_FILE", "PrepareSummary", "check_options", "prepare_dataset",
]  # fmt: skip
_PART_LOCK = ".prepare-part-{}.lock"
_SETUP_LOCK = ".prepare-setup.lock"


@dataclass
class PrepareSummary:
    """What one ``prepare`` call produced (counts cover the whole dataset, resumed chunks included;
    a ``--shard`` part leaves them 0 until ``--merge``)."""

    out: Path
    slices: int
    files: int
    rejected: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    slices_by_modality: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    chunks_processed: int = 0
    repaired: list[str] = field(default_factory=list)
    complete: bool = True


def check_options(
    image_size: int, workers: int | None, modality: str | None, chunk_files: int, max_image_mb: float | None
) -> None:
    """Every option checked before any file or folder is touched."""
    for value, name in ((image_size, "--image-size"), (chunk_files, "--chunk-files")):
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"{name} must be an integer, got {value!r}")
    if image_size < 8:
        raise UserError(f"--image-size must be at least 8 pixels, got {image_size}")
    if chunk_files < 1:
        raise UserError(f"--chunk-files must be at least 1, got {chunk_files}")
    if workers is not None and (not isinstance(workers, int) or workers < 0):
        raise UserError(f"--workers must be 0 or more (0/1: decode in this process), got {workers!r}")
    if modality is not None and modality not in MODALITIES:
        raise UserError(f"--modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    if max_image_mb is not None and not max_image_mb > 0:
        raise UserError(f"--max-image-mb must be a positive number of MB, got {max_image_mb!r}")


def prepare_dataset(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    image_size: int = 256,
    workers: int | None = None,
    modality: str | None = None,
    salt: str | None = None,
    chunk_files: int = CHUNK_FILES,
    progress: bool = True,
    identify: Identify | None = None,
    include: Callable[[str], bool] | None = None,
    keep_paths: bool = False,
    max_image_mb: float | None = None,
    verify: bool = False,
    shard: tuple[int, int] | None = None,
    merge: bool = False,
) -> PrepareSummary:
    """Decode every file under ``sources`` into ``out`` (see the module docstring); resumes finished chunks.

    ``workers``: decoder processes (default: the usable cores; 0 or 1 decode in-process). ``identify(rel,
    slice) -> (patient_id, study_id)``: dataset-specific raw IDs (picklable; runs in workers). ``include(rel)``:
    keep only files whose path relative to their source passes (runs here). ``salt``: a secret for this
    dataset instead of the installation's (keys then not comparable with other datasets).
    """
    check_options(image_size, workers, modality, chunk_files, max_image_mb)
    roots = [Path(sources)] if isinstance(sources, (str, os.PathLike)) else [Path(s) for s in sources]
    if not roots:
        raise UserError("prepare needs at least one source folder or file")
    missing = [str(r) for r in roots if not r.exists()]
    if missing:
        raise UserError(f"source not found: {', '.join(missing)}")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if shard is not None and merge:
        raise UserError("--shard and --merge are two steps: run the parts first, then --merge")
    workers = _available_cores() if workers is None else workers
    secret, origin = keys.resolve_secret(salt)
    config = {
        "format_version": FORMAT_VERSION,
        "image_size": image_size,
        "sources": [r.resolve().as_posix() for r in roots],
        "modality": modality,
        "chunk_files": chunk_files,
        "key_fingerprint": keys.key_fingerprint(secret),
        "key_origin": origin,
    }
    run = _Run(
        roots=[r.resolve() for r in roots], out=out, config=config, secret=secret, workers=workers,
        max_bytes=int(max_image_mb * MB) if max_image_mb else default_limit(workers), identify=identify,
        include=include, keep_paths=keep_paths, verify=verify, shard=shard, merge=merge, progress=progress,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out, shard):
        return run.execute()


@dataclass
class _Run:
    roots: list[Path]
    out: Path
    config: dict[str, Any]
    secret: str
    workers: int
    max_bytes: int
    identify: Identify | None
    include: Callable[[str], bool] | None
    keep_paths: bool
    verify: bool
    shard: tuple[int, int] | None
    merge: bool
    progress: bool

    def execute(self) -> PrepareSummary:
        out = self.out
        previous = self._setup()
        units = walk(self.roots, out, self.include)
        if not units:
            raise UserError(
                f"no image files found under {', '.join(map(str, self.roots))} (DICOM, NIfTI, PNG, JPEG, TIFF)"
            )
        chunks = chunked(units, self.config["chunk_files"])
        digests = [digest(chunk) for chunk in chunks]
        mine = part_chunks(len(chunks), self.shard)
        damaged = {i: chunk_damage(out, i, digests[i], self.verify) for i in mine}
        pending = [i for i in mine if damaged[i]]
        repaired = [why for why in damaged.values() if why and why not in ("not written", "inputs changed")]
        if self.merge and pending:
            raise UserError(_missing_parts(out, pending, len(chunks)))
        dataset_problems = dataset_damage(out, previous, self.verify) if previous.get("complete") else []
        if self.shard is None and not pending and previous.get("complete") and not dataset_problems:
            if self.keep_paths:
                write_paths(out, units, self.secret)
            return self._summary(previous, len(chunks), 0, repaired)
        if pending or self.shard is None:
            self._mark_incomplete()
        self._run_chunks(chunks, digests, pending)
        if self.shard is not None:
            shards.save_json(
                out / "parts" / f"part-{self.shard[0]}-of-{self.shard[1]}.json", {"chunks": mine}
            )
            empty = {"slices": 0, "files": len(units), "rejected": 0, "complete": False}
            return self._summary(empty, len(chunks), len(pending), repaired)
        info = finalize(out, len(chunks), self.config, units, self.secret, self.keep_paths)
        return self._summary(info, len(chunks), len(pending), repaired + dataset_problems)

    def _setup(self) -> dict[str, Any]:
        """Check or write the dataset's settings, once for all parts (under a short lock)."""
        out = self.out
        with FileLock(str(out / _SETUP_LOCK), timeout=120):
            if (out / INFO_FILE).is_file():
                previous = _check_config(out, self.config)
            else:
                _require_empty(out)
                previous = {}
                shards.save_json(out / INFO_FILE, {**self.config, "complete": False})
            (out / "shards").mkdir(exist_ok=True)
            (out / "parts").mkdir(exist_ok=True)
        if self.shard is None:
            shards.remove_temporaries(out)
        else:  # only this part's leftovers: other parts may be writing theirs right now
            index, count = self.shard
            shards.remove_temporaries(
                out, keep=lambda p: not (p.name.startswith("chunk-") and chunk_index(p) % count == index)
            )
        return previous

    def _mark_incomplete(self) -> None:
        with FileLock(str(self.out / _SETUP_LOCK), timeout=120):
            shards.save_json(self.out / INFO_FILE, {**self.config, "complete": False})
            (self.out / MANIFEST_FILE).unlink(missing_ok=True)

    def _run_chunks(self, chunks: list[list[Unit]], digests: list[str], pending: list[int]) -> None:
        """Decode pending chunks with a bounded look-ahead, writing each chunk as soon as its files are back."""
        from tqdm import tqdm

        if not pending:
            return
        executor, run = executor_map(self.workers, max(len(chunk) for chunk in chunks))
        bar = tqdm(
            total=sum(len(chunks[i]) for i in pending), unit="file", disable=not self.progress, desc="prepare"
        )
        in_flight: deque[tuple[int, Iterable[FileResult]]] = deque()
        queue = deque(pending)
        look_ahead = 2 if executor is not None else 1
        index = pending[0]
        try:
            while queue or in_flight:
                while queue and len(in_flight) < look_ahead:
                    i = queue.popleft()
                    in_flight.append((i, self._results(chunks[i], run)))
                index, results_iter = in_flight.popleft()
                results = []
                for result in results_iter:
                    results.append(result)
                    bar.update(1)
                write_chunk(self.out, index, digests[index], results)
        except BrokenProcessPool as exc:
            raise UserError(
                f"a decoder process crashed while preparing chunk {index}; finished chunks are kept. "
                "Run again with --workers 1 to find the file that crashes the decoder"
            ) from exc
        finally:
            bar.close()
            if executor is not None:
                executor.shutdown(cancel_futures=True)

    def _results(
        self, units: list[Unit], run: Callable[[list[Job]], Iterable[FileResult]]
    ) -> Iterable[FileResult]:
        """Results in unit order: paths with a problem are rejected here, the others decoded by ``run``."""
        jobs = [
            Job(u.root, str(u.path), u.rel, self.config["image_size"], self.config["modality"], self.secret,
                self.max_bytes, self.identify)
            for u in units if u.problem is None
        ]  # fmt: skip
        decoded = iter(run(jobs))

        def ordered() -> Iterable[FileResult]:
            for unit in units:
                yield problem_result(unit, self.secret) if unit.problem else next(decoded)

        return ordered()

    def _summary(
        self, info: dict[str, Any], chunks: int, processed: int, repaired: list[str]
    ) -> PrepareSummary:
        return PrepareSummary(
            out=self.out,
            slices=info["slices"],
            files=info["files"],
            rejected=info["rejected"],
            rejected_by_reason=info.get("rejected_by_reason", {}),
            slices_by_modality=info.get("slices_by_modality", {}),
            chunks=chunks,
            chunks_processed=processed,
            repaired=repaired,
            complete=bool(info.get("complete")),
        )


def _available_cores() -> int:
    """Cores this process may run on (a container or ``taskset`` often allows fewer than ``cpu_count``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def _locked(out: Path, shard: tuple[int, int] | None) -> Iterator[None]:
    """A part holds its own lock; a full run or a merge holds the dataset lock and every part's lock."""
    held: list[FileLock] = []
    try:
        if shard is not None:
            held.append(_acquire(out / _PART_LOCK.format(shard[0]), f"part {shard[0]}/{shard[1]} of {out}"))
            _acquire(out / LOCK_FILE, f"{out} (a full prepare or --merge)").release()
        else:
            held.append(_acquire(out / LOCK_FILE, str(out)))
            for path in sorted(out.glob(_PART_LOCK.format("*"))):
                held.append(_acquire(path, f"part {path.name.split('-')[2].split('.')[0]} of {out}"))
        yield
    finally:
        for lock in reversed(held):
            lock.release()


def _acquire(path: Path, what: str) -> FileLock:
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout as exc:
        raise UserError(f"another 'ssl-rad prepare' is writing {what}; wait for it to finish") from exc
    return lock


def _require_empty(out: Path) -> None:
    """A new dataset goes into an empty folder: never mix shards into an unrelated directory."""
    leftovers = sorted(
        p.name for p in out.iterdir() if not (p.name.startswith(".prepare") and p.name.endswith(".lock"))
    )
    if leftovers:
        raise UserError(
            f"{out} is not empty and holds no {INFO_FILE} (found {', '.join(leftovers[:5])}); "
            "choose a new --out folder"
        )


def _check_config(out: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Refuse to mix two different preparations in one folder (sizes, sources or keys would not match)."""
    info_path = out / INFO_FILE
    try:
        previous = json.loads(info_path.read_text())
        if not isinstance(previous, dict):
            raise ValueError("not a JSON object")
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
    if previous.get("key_fingerprint") != config["key_fingerprint"]:
        raise UserError(
            f"{out} was prepared with a different key (installation key, $SSL_RAD_KEY_FILE or --salt); "
            "use the same one to resume (every part of a sharded run must share it)"
        )
    return previous


def _missing_parts(out: Path, pending: list[int], n_chunks: int) -> str:
    """The merge error: which chunks are not done, and which ``--shard I/N`` runs they belong to."""
    counts = sorted({int(p.stem.rsplit("-", 1)[1]) for p in (out / "parts").glob("part-*-of-*.json")})
    listed = ", ".join(map(str, pending[:10])) + (" ..." if len(pending) > 10 else "")
    parts = "; ".join(f"parts {', '.join(sorted({f'{c % n}/{n}' for c in pending}))}" for n in counts)
    hint = f" ({parts})" if parts else ""
    return (
        f"cannot merge {out}: {len(pending)} of {n_chunks} chunks are not done{hint}: chunk {listed}. "
        "Run the missing --shard I/N parts (the same command with --shard) first"
    )
