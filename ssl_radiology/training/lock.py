"""One writer per run folder: an advisory ``fcntl`` lock on ``RUN_DIR/.lock``.

Two ``ssl-rad pretrain`` processes on one ``--out`` would otherwise both run, leaving the folder with the
config of one and the weights of the other and duplicate rows in ``metrics.csv``. The lock belongs to the
open file, so the kernel drops it when the process ends in any way (``kill -9`` included): a stale lock
file never blocks a later run. Only global rank 0 locks; the other ranks of a DDP run write nothing there.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ssl_radiology.errors import UserError

LOCK_FILE = ".lock"


def is_global_zero_process() -> bool:
    """Rank 0 of the job, from the launchers' environment (torchrun, SLURM, Lightning's own launcher)."""
    ranks = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
    return all(os.environ.get(name, "0") in ("", "0") for name in ranks)


class RunLock:
    """Hold the run folder's lock from :meth:`acquire` until :meth:`release` (or the process's end)."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        run_dir = self.path.parent
        if run_dir.exists() and not run_dir.is_dir():
            raise UserError(f"--out {run_dir} is a file, not a folder; choose a folder for the run")
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{self.path.parent} is in use by another ssl-rad pretrain (process {holder}); wait for it "
                "to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()
