"""Named data sources: turn ``phantom``, ``natural``, ``radnet``, ... or a folder into a prepared folder.

Each name is a YAML file in ``configs/data/`` with a ``kind``:

* ``phantom`` / ``natural`` — generated offline (:func:`~ssl_radiology.data.phantom.generate_phantom`,
  :func:`~ssl_radiology.data.natural.write_natural_crops`) and prepared on first use into
  ``<cache>/<kind>-<fingerprint>/{raw,prepared}``; the fingerprint covers every generation setting, so a
  changed config gets its own folder and an unchanged one is reused. A file lock per folder makes two
  processes asking at once build it once; raw files appear by atomic rename, and ``prepare`` itself resumes,
  so a crash mid-way is repaired by the next call. Keys use a fixed salt: there is no real patient.
* ``npz`` — MedMNIST-style ``.npz`` arrays under ``root_env``, written once as PNGs into the cache
  (:func:`write_npz_images`) and prepared like the generated sources; the folder's fingerprint covers the
  arrays' content, so a replaced or added ``.npz`` gets a fresh preparation.
* ``folder`` — real data under the folder named by an environment variable (``root_env``), prepared into
  ``prepared_dir`` or ``<cache>/<name>`` on first use (resumable: interrupting it loses at most one chunk)
  and kept in step with the folder by :mod:`.freshness` (a changed root is updated, a re-pointed one refused).

A real dataset names its ``layout`` (:mod:`.identities`): patient and study keys then come from the dataset's
own identifiers, and its official test images (CheXpert ``valid/``, NIH ``test_list.txt``, MIMIC's split
file, MedMNIST ``test`` arrays) are left out of the source, so that pre-training never sees an image a
published benchmark tests on. ``include_test: true`` in the YAML, or the ``+test`` suffix on the name
(``--data chexpert+test``), takes them in (the preparation then lives in ``<cache>/<name>+test``).

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
from ssl_radiology.data.cache import CACHE_ENV, cache_root
from ssl_radiology.data.freshness import ensure_prepared, is_prepared, root_fingerprint
from ssl_radiology.data.identities import MedMnist, layout
from ssl_radiology.data.prepare import FORMAT_VERSION, INFO_FILE, prepare_dataset
from ssl_radiology.data.prepared import read_info
from ssl_radiology.errors import UserError

__all__ = [
    "CACHE_ENV", "cache_root", "config_name", "env_root", "is_prepared", "open_source", "phantom_raw_dir", "resolve_source",
    "split_selector", "write_npz_images",
]  # fmt: skip
TEST_SUFFIX = "+test"


def resolve_source(
    name_or_path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """A prepared folder for ``name_or_path``: a prepared folder itself, or a name from ``configs/data``."""
    path = Path(name_or_path).expanduser()
    if (path / INFO_FILE).is_file():
        read_info(path)  # raises a clear error for an unfinished or outdated preparation
        return path.resolve()
    name, with_test = _test_option(str(name_or_path))
    if name not in available("data"):
        if path.exists():
            raise UserError(
                f"{path} is not a prepared dataset; run 'ssl-rad prepare {path} --out PREPARED_DIR' first"
            )
        names = ", ".join(available("data"))
        raise UserError(f"unknown data source '{name}': not a folder and not one of {names}")
    cfg = load_group("data", name)
    if with_test:
        cfg.include_test = True
    kind = cfg.get("kind")
    cache = cache_root(cache_dir)
    if kind == "phantom":
        return _generated("phantom", cfg, cache, _build_phantom, modality=None)
    if kind == "natural":
        return _generated("natural", cfg, cache, _build_natural, modality="OT")
    if kind == "folder":
        return _folder(name, cfg, cache)
    if kind == "npz":
        root = env_root(f"data source '{name}'", cfg)
        include = None if cfg.get("include_test") else _without(MedMnist().official_test(root))
        return _generated(
            name,
            cfg,
            cache,
            lambda c, out: write_npz_images(sorted(root.rglob("*.npz")), out),
            cfg.get("modality"),
            root_fingerprint(root)["digest"],
            identify=MedMnist().identify,
            include=include,
        )
    raise UserError(
        f"configs/data/{name}.yaml: unknown kind {kind!r} (expected phantom, natural, folder or npz)"
    )


def _test_option(name: str) -> tuple[str, bool]:
    """``"chexpert+test"`` → ``("chexpert", True)``: the source with its official test images."""
    return (name.removesuffix(TEST_SUFFIX), True) if name.endswith(TEST_SUFFIX) else (name, False)


def config_name(name: str) -> str:
    """The ``configs/data`` name behind a source name: ``"chexpert+test"`` → ``"chexpert"``."""
    return _test_option(name)[0]


def _without(is_test: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda rel: not is_test(rel)


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
    """Identity of a generated source: its settings, what it was built from, the format and the key in use
    (keys are installation-wide, so a new installation key needs a new preparation)."""
    from ssl_radiology.data.keys import installation_secret, key_fingerprint

    settings = OmegaConf.to_container(cfg, resolve=True)
    text = json.dumps(
        {
            "settings": settings,
            "extra": str(extra),
            "format_version": FORMAT_VERSION,
            "key": key_fingerprint(installation_secret()),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _generated(
    kind: str,
    cfg: DictConfig,
    cache: Path,
    build: Callable[[DictConfig, Path], object],
    modality: str | None,
    origin: object = None,
    identify: Callable[[str, object], tuple[str | None, str | None]] | None = None,
    include: Callable[[str], bool] | None = None,
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
            workers=cfg.get("workers"),
            identify=identify,
            include=include,
        )
    return prepared


def _build_phantom(cfg: DictConfig, out: Path) -> None:
    from ssl_radiology.data.phantom import generate_phantom

    generate_phantom(
        out,
        cases=int(cfg.cases),
        seed=int(cfg.seed),
        ct_size=int(cfg.ct_size),
        xray_size=int(cfg.xray_size),
        first_case=int(cfg.get("first_case", 0)),
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


def write_npz_images(files: list[Path], out: Path) -> list[Path]:
    """MedMNIST-style ``.npz`` files → ``<stem>/<split>/<index:06d>.png`` (8-bit, as stored in the arrays).

    Every ``<split>_images`` array (``train``, ``val``, ``test``) of every file is written, so that the path
    alone maps a prepared slice back to ``<split>_labels[index]`` of its file; pre-training sources leave
    ``test`` out when they prepare, evaluation tasks keep it. RGB sets are written as RGB PNGs and become
    grayscale in the reader, exactly as any RGB image does.
    """
    from PIL import Image

    if not files:
        raise UserError("no .npz files (expected MedMNIST files such as pneumoniamnist.npz)")
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


def env_root(what: str, cfg: DictConfig, instead: str = "--data phantom") -> Path:
    """The folder named by ``cfg.root_env`` (``~`` expanded); a one-line error naming the variable if unset.

    ``what`` says who needs it (``"data source 'chexpert'"``), ``instead`` what works without any download.
    """
    env = str(cfg.root_env)
    root = os.environ.get(env)
    if not root or not Path(root).expanduser().is_dir():
        state = f"${env} points to {root}, which is not a folder" if root else f"${env} is not set"
        raise UserError(
            f"{what} needs its files: {state}. Set {env} to {cfg.get('expects', 'the dataset folder')}, "
            f"or use '{instead}' for the built-in synthetic data"
        )
    return Path(root).expanduser().resolve()


def _folder(name: str, cfg: DictConfig, cache: Path) -> Path:
    root = env_root(f"data source '{name}'", cfg)
    with_test = bool(cfg.get("include_test", False))
    folder = f"{name}{TEST_SUFFIX}" if with_test else name
    prepared = Path(cfg.prepared_dir).expanduser() if cfg.get("prepared_dir") else cache / folder
    dataset = layout(str(cfg.layout)) if cfg.get("layout") else None
    include = None if with_test or dataset is None else _without(dataset.official_test(root))
    return ensure_prepared(
        root,
        prepared,
        label=f"data source '{name}' (${cfg.root_env})",
        image_size=int(cfg.image_size),
        modality=cfg.get("modality"),
        identify=None if dataset is None else dataset.identify,
        include=include,
        workers=cfg.get("workers"),
        settings={"include_test": with_test, "layout": cfg.get("layout")},
    )
