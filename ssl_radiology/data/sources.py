"""Named data sources: turn ``phantom``, ``natural``, ``radnet``, ... or a folder into a prepared folder.

Each name is a YAML file in ``configs/data/`` with a ``kind``:

* ``phantom`` / ``natural`` — generated offline (:func:`~ssl_radiology.data.phantom.generate_phantom`,
  :func:`~ssl_radiology.data.natural.write_natural_crops`) and prepared on first use into
  ``<cache>/<kind>-<fingerprint>/{raw,prepared}``; the fingerprint covers every generation setting, so a
  changed config gets its own folder and an unchanged one is reused. A file lock per folder makes two
  processes asking at once build it once; raw files appear by atomic rename, and ``prepare`` itself resumes,
  so a crash mid-way is repaired by the next call. Keys use a fixed salt: there is no real patient.
* ``npz`` — MedMNIST-style ``.npz`` arrays under ``root_env``, written once as PNGs into the cache
  (:func:`write_npz_images`) and prepared like the generated sources.
* ``folder`` — real data under the folder named by an environment variable (``root_env``), prepared into
  ``prepared_dir`` or ``<cache>/<name>`` on first use (resumable: interrupting it loses at most one chunk).

``<cache>`` is ``cache_dir``, else ``$SSL_RAD_CACHE``, else ``~/.cache/ssl-radiology``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from ssl_radiology.config import available, load_group
from ssl_radiology.data.prepare import FORMAT_VERSION, INFO_FILE, prepare_dataset
from ssl_radiology.data.prepared import read_info
from ssl_radiology.errors import UserError

CACHE_ENV = "SSL_RAD_CACHE"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    return Path(
        cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ssl-radiology"
    ).expanduser()


def is_prepared(folder: Path) -> bool:
    """True for a folder whose ``prepare`` finished (``prepared.json`` says complete)."""
    try:
        return bool(json.loads((folder / INFO_FILE).read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def resolve_source(
    name_or_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """A prepared folder for ``name_or_path``: a prepared folder itself, or a name from ``configs/data``."""
    path = Path(name_or_path).expanduser()
    if (path / INFO_FILE).is_file():
        read_info(path)  # raises a clear error for an unfinished or outdated preparation
        return path.resolve()
    name = str(name_or_path)
    if name not in available("data"):
        if path.exists():
            raise UserError(
                f"{path} is not a prepared dataset; run 'ssl-rad prepare {path} --out PREPARED_DIR' first"
            )
        names = ", ".join(available("data"))
        raise UserError(f"unknown data source '{name}': not a folder and not one of {names}")
    cfg = load_group("data", name)
    kind = cfg.get("kind")
    cache = cache_root(cache_dir)
    if kind == "phantom":
        return _generated("phantom", cfg, cache, _build_phantom, modality=None)
    if kind == "natural":
        return _generated("natural", cfg, cache, _build_natural, modality="OT")
    if kind == "folder":
        return _folder(name, cfg, cache)
    if kind == "npz":
        root = _env_root(name, cfg)
        return _generated(
            name, cfg, cache, lambda c, out: write_npz_images(root, out), cfg.get("modality"), root
        )
    raise UserError(
        f"configs/data/{name}.yaml: unknown kind {kind!r} (expected phantom, natural, folder or npz)"
    )


def split_selector(source: str) -> tuple[str, list[str] | None]:
    """``"phantom:CT"`` → ``("phantom", ["CT"])``; ``"phantom:CR,DX"`` → two modalities; a plain name → None.

    The selector lets one prepared corpus that mixes modalities (the phantom has CT slices and X-rays) feed
    a single-modality run, e.g. in-domain pre-training on CT only. An existing path is never split.
    """
    head, sep, tail = str(source).rpartition(":")
    if not sep or not head or Path(source).expanduser().exists() or not tail.replace(",", "").isalnum():
        return str(source), None
    return head, [m.strip().upper() for m in tail.split(",") if m.strip()]


def open_source(source: str, cache_dir: str | os.PathLike[str] | None = None):
    """A :class:`PreparedDataset` for ``NAME``, ``NAME:MODALITY[,MODALITY]`` or a prepared folder."""
    from ssl_radiology.data.prepared import PreparedDataset

    name, modalities = split_selector(source)
    dataset = PreparedDataset(resolve_source(name, cache_dir), modality=modalities)
    if len(dataset) == 0:
        raise UserError(f"data source '{source}' has no slices of modality {', '.join(modalities or [])}")
    return dataset


def phantom_raw_dir(prepared_dir: str | os.PathLike[str]) -> Path:
    """The generated phantom files (DICOM / NIfTI / ``labels/*.csv``) that a prepared phantom came from."""
    raw = Path(read_info(prepared_dir)["sources"][0])
    if not (raw / "phantom.json").is_file():
        raise UserError(f"{prepared_dir} was not prepared from a phantom corpus (no {raw / 'phantom.json'})")
    return raw


def _fingerprint(cfg: DictConfig, extra: object = None) -> str:
    settings = OmegaConf.to_container(cfg, resolve=True)
    text = json.dumps(
        {"settings": settings, "extra": str(extra), "format_version": FORMAT_VERSION}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _generated(
    kind: str,
    cfg: DictConfig,
    cache: Path,
    build: Callable[[DictConfig, Path], object],
    modality: str | None,
    origin: Path | None = None,
) -> Path:
    """Build raw files (once, atomically) then prepare them, under a lock; ``origin`` joins the fingerprint."""
    base = cache / f"{kind}-{_fingerprint(cfg, origin)}"
    prepared = base / "prepared"
    if is_prepared(prepared):
        return prepared
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / ".lock")):
        if is_prepared(prepared):  # another process finished it while we waited
            return prepared
        raw = base / "raw"
        if not raw.is_dir():
            tmp = base / f"raw.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            build(cfg, tmp)
            os.replace(tmp, raw)
        prepare_dataset(
            raw,
            prepared,
            image_size=int(cfg.image_size),
            modality=modality,
            salt=f"ssl-radiology-{kind}",
            workers=cfg.get("workers"),
        )
    return prepared


def _build_phantom(cfg: DictConfig, out: Path) -> None:
    from ssl_radiology.data.phantom import generate_phantom

    generate_phantom(
        out, cases=int(cfg.cases), seed=int(cfg.seed), ct_size=int(cfg.ct_size), xray_size=int(cfg.xray_size)
    )


def _build_natural(cfg: DictConfig, out: Path) -> None:
    from ssl_radiology.data.natural import write_natural_crops

    write_natural_crops(
        out,
        count=int(cfg.count),
        seed=int(cfg.seed),
        min_fraction=float(cfg.min_fraction),
        max_fraction=float(cfg.max_fraction),
    )


def write_npz_images(root: Path, out: Path) -> list[Path]:
    """MedMNIST-style ``.npz`` files → ``<stem>/<split>/<index:06d>.png`` (8-bit, as stored in the arrays).

    Every ``<split>_images`` array (``train``, ``val``, ``test``) of every ``.npz`` under ``root`` is
    written, so that the path alone maps a prepared slice back to ``<split>_labels[index]`` of its file.
    """
    from PIL import Image

    files = sorted(root.rglob("*.npz"))
    if not files:
        raise UserError(f"{root}: no .npz files (expected MedMNIST files such as pneumoniamnist.npz)")
    written = []
    for path in files:
        with np.load(path) as arrays:
            for key in sorted(k for k in arrays.files if k.endswith("_images")):
                folder = out / path.stem / key.removesuffix("_images")
                folder.mkdir(parents=True, exist_ok=True)
                for index, image in enumerate(arrays[key]):
                    target = folder / f"{index:06d}.png"
                    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(target)
                    written.append(target)
    return written


def _env_root(name: str, cfg: DictConfig) -> Path:
    env = str(cfg.root_env)
    root = os.environ.get(env)
    if not root or not Path(root).is_dir():
        state = f"${env} points to {root}, which is not a folder" if root else f"${env} is not set"
        raise UserError(
            f"data source '{name}' needs its files: {state}. Set {env} to {cfg.get('expects', 'the dataset folder')}"
            ", or use '--data phantom' for the built-in synthetic corpus"
        )
    return Path(root).resolve()


def _folder(name: str, cfg: DictConfig, cache: Path) -> Path:
    root = _env_root(name, cfg)
    prepared = Path(cfg.prepared_dir).expanduser() if cfg.get("prepared_dir") else cache / name
    if is_prepared(prepared):
        return prepared
    print(f"preparing '{name}' from {root} into {prepared} (once; interrupt and re-run to resume)")
    prepare_dataset(
        root,
        prepared,
        image_size=int(cfg.image_size),
        modality=cfg.get("modality"),
        workers=cfg.get("workers"),
    )
    return prepared
