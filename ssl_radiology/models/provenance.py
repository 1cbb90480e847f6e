"""Where a backbone's weights came from: its pre-training health and the patients its pre-training saw.

``ssl-rad pretrain`` writes ``health.json`` and ``pretrain_patients.json`` into the run folder and copies both
beside an exported backbone; ``backbone.json`` and the Lightning checkpoint carry the health too (contract 4).
Evaluation reads them so that every result row can repeat the health status and the leakage guard can compare
pre-training patients with a task's test patients. Reading never loads weights unless a bare ``.ckpt`` is the
only place the information lives.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from ssl_radiology.errors import UserError

HEALTH_FILE = "health.json"
PATIENTS_FILE = "pretrain_patients.json"
META_FILE = "backbone.json"
#: specs whose weights never saw a patient of this installation (drawn at random, pixels, natural images)
NO_PATIENTS = ("random", "raw-pixels", "imagenet")


def _is_builtin(spec: str) -> bool:
    return spec.split(":", 1)[0] in NO_PATIENTS


def _folder(spec: str) -> Path | None:
    """The folder that holds a spec's run files: the run dir itself, a weights file's folder, or the run
    dir above ``checkpoints/`` for a Lightning checkpoint."""
    path = Path(spec)
    if path.is_dir():
        return path
    if path.suffix == ".ckpt" and path.parent.name == "checkpoints":
        return path.parent.parent
    return path.parent if path.is_file() else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable provenance file ({exc})") from exc


def _meta(spec: str) -> dict:
    """``backbone.json`` (or ``<stem>.json`` beside a ``.safetensors``) of a spec, {} when there is none."""
    path, folder = Path(spec), _folder(spec)
    candidates = [path.with_suffix(".json")] if path.suffix == ".safetensors" else []
    if folder is not None:
        candidates.append(folder / META_FILE)
    for candidate in candidates:
        if candidate.is_file():
            meta = _read_json(candidate)
            return meta if isinstance(meta, dict) else {}
    return {}


@lru_cache(maxsize=4)
def _ckpt_info(spec: str) -> dict:
    """``checkpoint["ssl_radiology"]`` of a ``.ckpt`` spec, {} for anything else."""
    if Path(spec).suffix != ".ckpt" or not Path(spec).is_file():
        return {}
    from ssl_radiology.models.checkpoints import _torch_load

    info = _torch_load(Path(spec)).get("ssl_radiology")
    return info if isinstance(info, dict) else {}


def read_health(spec: str | os.PathLike[str]) -> dict | None:
    """The pre-training health record of a backbone, or None (built-in spec, or a run that recorded none)."""
    text = os.fspath(spec)
    if _is_builtin(text):
        return None
    folder = _folder(text)
    if folder is not None and (folder / HEALTH_FILE).is_file():
        health = _read_json(folder / HEALTH_FILE)
        return health if isinstance(health, dict) else None
    health = _meta(text).get("health") or _ckpt_info(text).get("health")
    return health if isinstance(health, dict) else None


def health_status(spec: str | os.PathLike[str]) -> str:
    """``ok`` | ``collapsed`` | ``plateau`` | ``unknown`` for pre-trained weights; "" for built-in specs."""
    if _is_builtin(os.fspath(spec)):
        return ""
    health = read_health(spec)
    return str(health.get("status", "unknown")) if health else "unknown"


def read_patients(spec: str | os.PathLike[str]) -> set[str] | None:
    """Patient keys the backbone's pre-training saw: empty for built-in specs, None when not recorded."""
    text = os.fspath(spec)
    if _is_builtin(text):
        return set()
    folder = _folder(text)
    name = str(_meta(text).get("patients_file") or PATIENTS_FILE)
    if folder is None or not (folder / name).is_file():
        return None
    record = _read_json(folder / name)
    if not isinstance(record, dict) or not isinstance(record.get("patients"), list):
        raise UserError(f"{folder / name}: expected a JSON object with a 'patients' list")
    return {str(p) for p in record["patients"]}


def read_n_images(spec: str | os.PathLike[str]) -> int | None:
    """Number of images the pre-training saw (``pretrain_patients.json``), None when not recorded."""
    folder = _folder(os.fspath(spec)) if not _is_builtin(os.fspath(spec)) else None
    path = None if folder is None else folder / PATIENTS_FILE
    if path is None or not path.is_file():
        return None
    record = _read_json(path)
    value = record.get("n_images") if isinstance(record, dict) else None
    return int(value) if isinstance(value, int | float) else None


def read_init_hash(spec: str | os.PathLike[str]) -> str | None:
    """Hash of the weights a continued pre-training started from (``--init``), None for a fresh start."""
    text = os.fspath(spec)
    if _is_builtin(text):
        return None
    init = _meta(text).get("init") or _ckpt_info(text).get("init")
    return str(init["hash"]) if isinstance(init, dict) and init.get("hash") else None


def row_fields(spec: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance columns every evaluation result row of this backbone repeats."""
    return {"health": health_status(spec), "init_hash": read_init_hash(spec)}
