"""Run the pending cells of an experiment, in process, one after another.

Cells run in this process (not as subprocesses) because importing torch, Lightning and timm costs seconds per
process, which would dominate a study of many small evaluation cells on a laptop-sized machine. Each cell's
request goes straight to the :mod:`ssl_radiology.api`. A failing cell — whatever it raises, ``SystemExit``
included; only Ctrl-C stops the study — is recorded in its folder (``cell-failed.json`` with the error) and
the study goes on with every cell that does not depend on it; the exit status says whether anything failed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from ssl_radiology.api.types import AnalyzeRequest, EvalRequest, PretrainRequest
from ssl_radiology.config import save
from ssl_radiology.errors import UserError, describe_os_error
from ssl_radiology.experiment.cells import DONE_FILE, FAILED_FILE, Cell, Outcome, Request, expand_cells
from ssl_radiology.experiment.spec import ExperimentSpec

console = Console(stderr=True)


def execute_request(request: Request) -> object:
    """Run one cell's request through the Python API."""
    from ssl_radiology import api

    if isinstance(request, PretrainRequest):
        return api.pretrain(request)
    if isinstance(request, EvalRequest):
        return api.evaluate(request)
    if isinstance(request, AnalyzeRequest):
        return api.analyze(request)
    raise TypeError(f"no API function for {type(request).__name__}")


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


def check_writable(out: Path) -> None:
    """Fail before any work when the output folder cannot be written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(describe_os_error(exc) or f"cannot write to {out}: {exc}") from exc


def select(cells: Sequence[Cell], only: str | None) -> list[Cell]:
    """Cells matching ``--only`` (a shell pattern on cell ids, e.g. ``'eval/knn/*'``) plus what they need."""
    if not only:
        return list(cells)
    by_id = {cell.id: cell for cell in cells}
    wanted = {cell.id for cell in cells if fnmatch.fnmatch(cell.id, only)}
    if not wanted:
        raise UserError(f"--only {only!r} matches no cell; see the ids with --dry-run")
    stack = list(wanted)
    while stack:
        for dep in by_id[stack.pop()].deps:
            if dep not in wanted:
                wanted.add(dep)
                stack.append(dep)
    return [cell for cell in cells if cell.id in wanted]


def show_plan(cells: Sequence[Cell]) -> None:
    table = Table(title=f"{len(cells)} cells", show_lines=False)
    table.add_column("cell")
    table.add_column("state")
    table.add_column("command")
    for cell in cells:
        table.add_row(cell.id, cell.state(), cell.command)
    Console().print(table)


def _failure(exc: BaseException) -> str:
    """One line for ``cell-failed.json``; a traceback on the console for what is not a user error."""
    if isinstance(exc, UserError):
        return str(exc)
    if isinstance(exc, SystemExit):  # e.g. argparse inside a library, sys.exit in user code
        return f"exited with status {exc.code}"
    if isinstance(exc, OSError):
        message = describe_os_error(exc)
        if message is not None:  # disk full / unwritable: every later cell would fail the same way
            raise UserError(message) from exc
    traceback.print_exception(exc)
    return f"{type(exc).__name__}: {exc}"


def run_cells(cells: Sequence[Cell], execute: Callable[[Request], object] = execute_request) -> list[Outcome]:
    """Run every cell that is not done; record failures and block the cells that depend on them."""
    failed: set[str] = set()
    outcomes: list[Outcome] = []
    total = len(cells)
    for position, cell in enumerate(cells, start=1):
        label = f"[{position}/{total}] {cell.id}"
        if cell.state() == "done":
            console.print(f"[dim]{label}: done, skipped[/dim]")
            outcomes.append(Outcome(cell, "skipped"))
            continue
        broken = [dep for dep in cell.deps if dep in failed]
        if broken:
            console.print(f"[yellow]{label}: blocked by failed {', '.join(broken)}[/yellow]")
            failed.add(cell.id)
            outcomes.append(Outcome(cell, "blocked", error=f"needs {', '.join(broken)}"))
            continue
        console.rule(label)
        cell.out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        error = ""
        try:
            execute(cell.request)
        except KeyboardInterrupt:
            raise
        except (
            BaseException
        ) as exc:  # a failing cell, whatever it raises, must not cost the rest of the study
            error = _failure(exc)
        seconds = time.perf_counter() - start
        record = {"id": cell.id, "command": cell.command, "fingerprint": cell.fingerprint, "seconds": seconds}
        if error:
            _write_json_atomic(cell.out / FAILED_FILE, {**record, "error": error})
            console.print(f"[red]{label}: failed after {seconds:.1f} s: {error}[/red]")
            failed.add(cell.id)
            outcomes.append(Outcome(cell, "failed", seconds, error))
        else:
            _write_json_atomic(cell.out / DONE_FILE, record)
            (cell.out / FAILED_FILE).unlink(missing_ok=True)
            console.print(f"[green]{label}: done in {seconds:.1f} s[/green]")
            outcomes.append(Outcome(cell, "done", seconds))
    return outcomes


def run_experiment(
    spec: ExperimentSpec,
    out: Path,
    *,
    only: str | None = None,
    dry_run: bool = False,
    execute: Callable[[Request], object] = execute_request,
) -> list[Outcome]:
    """Expand, (optionally) run, and report. ``execute`` runs one request (default: the Python API)."""
    cells = select(expand_cells(spec, out), only)
    if dry_run:
        show_plan(cells)
        return []
    check_writable(out)
    save(OmegaConf.create(spec.resolved), out, "experiment.yaml")  # the settings this study ran with
    outcomes = run_cells(cells, execute)
    from ssl_radiology.experiment.report import write_report

    write_report(spec, out, outcomes)
    return outcomes
