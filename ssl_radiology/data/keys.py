"""Pseudonymous keys: the only form in which patient, study, series and file identities leave the readers.

**One secret per installation** (or per study, when a team shares it): ``$SSL_RAD_KEY`` (the secret as a
string), else the file named by ``$SSL_RAD_KEY_FILE``, else ``<cache>/installation.key`` (created with mode
0600 on first use; ``<cache>`` is ``$SSL_RAD_CACHE`` or ``~/.cache/ssl-radiology``). Every prepared dataset
and every evaluation task keys its rows with it, so the same patient gets the same key in a CT corpus, a
chest X-ray task and a pre-training manifest of one installation: that is what lets the leakage guard count
pre-training patients that reappear in a test split. Several machines (SLURM nodes) preparing parts of one
dataset must share the secret (``SSL_RAD_KEY_FILE`` on a shared file system); ``prepare`` records a
fingerprint of it and refuses to mix keys.

Keys are ``HMAC-SHA256(secret, value)``, first 16 hex characters (64 bits: collisions are negligible at the
scale of any corpus). An HMAC rather than a salted hash because the inputs (patient IDs, file paths) are
guessable: without the secret nobody can test a guess against a key.

* ``patient_key(raw_id)``, ``study_key(raw_uid)``, ``series_key(raw_uid)``: namespaced so that an ID that
  happens to equal a UID does not produce the same key.
* ``file_key(relative_posix_path)``: the identity of an input file, relative to the SRC folder given to
  ``prepare`` (``train/patient00001/study1/view1_frontal.jpg``). Manifests and ``rejected.csv`` store it
  instead of the path, which often embeds patient IDs; label files are joined by computing the same key.
  Names that are not valid UTF-8 are hashed as their raw bytes (``os.fsencode``).

``--salt`` / ``$SSL_RAD_SALT`` on ``prepare`` override the secret for one dataset: its keys are then *not*
comparable with any other dataset's (use it only to make a dataset's keys unlinkable on purpose).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path, PurePath
from typing import Any

from ssl_radiology.data.cache import cache_root
from ssl_radiology.errors import UserError

KEY_ENV = "SSL_RAD_KEY"
KEY_FILE_ENV = "SSL_RAD_KEY_FILE"
SALT_ENV = "SSL_RAD_SALT"
INSTALLATION_KEY = "installation.key"


def hash_key(value: str | bytes, secret: str) -> str:
    """``HMAC-SHA256(secret, value)`` as 16 hex characters; ``str`` values are hashed as UTF-8 (surrogate
    escapes from undecodable file names as the raw bytes they stand for)."""
    data = (
        value
        if isinstance(value, bytes)
        else os.fsencode(value)
        if _has_surrogates(value)
        else value.encode()
    )
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()[:16]


def _has_surrogates(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def installation_secret() -> str:
    """The secret of this installation: ``$SSL_RAD_KEY`` > ``$SSL_RAD_KEY_FILE`` > ``<cache>/installation.key``."""
    value = os.environ.get(KEY_ENV)
    if value:
        return value
    named = os.environ.get(KEY_FILE_ENV)
    path = Path(named).expanduser() if named else cache_root() / INSTALLATION_KEY
    cached = _CACHE.get(str(path))
    if cached is not None:
        return cached
    if named and not path.is_file():
        raise UserError(f"${KEY_FILE_ENV} names {path}, which is not a file")
    if not path.is_file():
        _create_key_file(path)
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise UserError(f"cannot read the key file {path}: {exc.strerror}") from exc
    if not secret:
        raise UserError(f"the key file {path} is empty; delete it (a new key is made) or restore it")
    _CACHE[str(path)] = secret
    return secret


_CACHE: dict[str, str] = {}  # key file -> secret: reading it once per process, not once per row


def _create_key_file(path: Path) -> None:
    """A new random secret, written 0600 under a temporary name and linked in, so two processes starting at
    once agree on one key (the loser of the race reads the winner's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)  # fails if another process created it first: keep theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def resolve_secret(salt: str | None = None) -> tuple[str, str]:
    """(secret, origin) for a new dataset: ``salt`` > ``$SSL_RAD_SALT`` (origin ``"salt"``: keys not
    comparable with other datasets) > the installation secret (origin ``"installation"``)."""
    explicit = salt or os.environ.get(SALT_ENV)
    if explicit:
        return explicit, "salt"
    return installation_secret(), "installation"


def key_fingerprint(secret: str) -> str:
    """Tells two secrets apart without revealing either (recorded in ``prepared.json``)."""
    return hashlib.sha256(f"ssl-radiology key fingerprint\x00{secret}".encode()).hexdigest()[:16]


def patient_key(raw_id: str, secret: str | None = None) -> str:
    """Key of a patient ID (DICOM PatientID or a dataset's own, e.g. ``"chexpert/patient00001"``)."""
    return hash_key(raw_id, secret or installation_secret())


def study_key(raw_uid: str, secret: str | None = None) -> str:
    """Key of a study identifier (DICOM StudyInstanceUID or a dataset's own)."""
    return hash_key(f"study:{raw_uid}", secret or installation_secret())


def series_key(raw_uid: str, secret: str | None = None) -> str:
    """Key of a series identifier (DICOM SeriesInstanceUID)."""
    return hash_key(f"series:{raw_uid}", secret or installation_secret())


def file_key(relative_path: str | bytes | PurePath, secret: str | None = None) -> str:
    """Key of an input file from its posix path relative to the SRC folder it was prepared from."""
    if isinstance(relative_path, PurePath):
        relative_path = relative_path.as_posix()
    prefix = b"file:" if isinstance(relative_path, bytes) else "file:"
    return hash_key(prefix + relative_path, secret or installation_secret())  # type: ignore[operator]


def dataset_secret(info: dict[str, Any]) -> str:
    """The secret a prepared dataset was keyed with (from its ``prepared.json``), so that label files can
    be joined by :func:`file_key`: the installation secret, or ``$SSL_RAD_SALT`` when it was prepared with
    that; a clear error when neither matches (prepared elsewhere, or with a ``--salt`` not given now)."""
    wanted = info.get("key_fingerprint")
    candidates = [installation_secret()]
    if os.environ.get(SALT_ENV):
        candidates.append(os.environ[SALT_ENV])
    for secret in candidates:
        if key_fingerprint(secret) == wanted:
            return secret
    raise UserError(
        "this prepared dataset was keyed with another secret (another installation's key, or --salt); "
        f"set ${KEY_FILE_ENV} (or ${SALT_ENV}) to the one it was prepared with, or prepare it again"
    )
