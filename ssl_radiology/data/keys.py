"""Salted hashes: the only form in which patient, study and series identifiers leave ``ssl_radiology.io``.

Patient-level splitting needs only *consistency* within one prepared dataset (the same patient gets the same
key in every row), not a global pseudonym, so a per-dataset salt is enough and keeps keys from two datasets
unlinkable. The salt is taken from ``--salt``, else ``$SSL_RAD_SALT``, else a random one generated once per
dataset and kept in ``DIR/salt.secret`` (mode 0600) so that a resumed run produces the same keys. Only a
fingerprint of the salt is written into ``prepared.json``; delete ``salt.secret`` before sharing a prepared
folder if the raw identifiers are guessable (a resume then needs the same ``--salt``).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

SALT_ENV = "SSL_RAD_SALT"
SALT_FILE = "salt.secret"


def hash_key(value: str, salt: str) -> str:
    """Salted SHA-256 of ``value``, first 16 hex characters (64 bits: collisions are negligible per dataset)."""
    return hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:16]


def salt_fingerprint(salt: str) -> str:
    """A value that tells two salts apart without revealing either (used to refuse mixing salts on resume)."""
    return hashlib.sha256(f"ssl-radiology salt fingerprint\x00{salt}".encode()).hexdigest()[:16]


def resolve_salt(out_dir: Path, salt: str | None = None) -> str:
    """The salt for the dataset in ``out_dir``: explicit, else ``$SSL_RAD_SALT``, else the stored random one."""
    if salt:
        return salt
    env = os.environ.get(SALT_ENV)
    if env:
        return env
    path = Path(out_dir) / SALT_FILE
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    generated = secrets.token_hex(16)
    tmp = path.with_name(f"{SALT_FILE}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(generated + "\n")
    os.replace(tmp, path)
    return generated
