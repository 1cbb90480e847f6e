"""Installation secret and pseudonymous keys (``ssl_radiology.data.keys``)."""

from __future__ import annotations

import hashlib
import hmac
import stat
from pathlib import Path, PurePosixPath

import pytest

from ssl_radiology.data import keys
from ssl_radiology.errors import UserError


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (keys.KEY_ENV, keys.KEY_FILE_ENV, keys.SALT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SSL_RAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(keys, "_CACHE", {})


def test_installation_key_is_created_once_private_and_reused(tmp_path: Path) -> None:
    first = keys.installation_secret()
    path = tmp_path / "cache" / keys.INSTALLATION_KEY
    assert path.read_text().strip() == first and len(first) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys._CACHE.clear()
    assert keys.installation_secret() == first


def test_precedence_env_key_then_key_file_then_installation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "team.key"
    key_file.write_text("team-secret\n")
    monkeypatch.setenv(keys.KEY_FILE_ENV, str(key_file))
    assert keys.installation_secret() == "team-secret"
    monkeypatch.setenv(keys.KEY_ENV, "env-secret")
    assert keys.installation_secret() == "env-secret"
    assert keys.resolve_secret() == ("env-secret", "installation")
    assert keys.resolve_secret("explicit") == ("explicit", "salt")
    monkeypatch.setenv(keys.SALT_ENV, "from-env")
    assert keys.resolve_secret() == ("from-env", "salt")
    monkeypatch.delenv(keys.KEY_ENV)
    monkeypatch.setenv(keys.KEY_FILE_ENV, str(tmp_path / "missing.key"))
    keys._CACHE.clear()
    with pytest.raises(UserError, match="SSL_RAD_KEY_FILE names"):
        keys.installation_secret()


def test_keys_are_hmacs_namespaced_and_path_forms_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.KEY_ENV, "k")
    expected = hmac.new(b"k", b"PID-1", hashlib.sha256).hexdigest()[:16]
    assert keys.patient_key("PID-1") == expected
    assert len({keys.patient_key("X"), keys.study_key("X"), keys.series_key("X"), keys.file_key("X")}) == 4
    rel = "train/patient00001/study1/view1_frontal.jpg"
    assert keys.file_key(rel) == keys.file_key(PurePosixPath(rel)) == keys.file_key(rel.encode())
    assert keys.file_key(b"caf\xe9.dcm") == keys.file_key("caf\udce9.dcm")  # undecodable bytes, both forms
    assert keys.patient_key("PID-1", "other") != expected


def test_dataset_secret_finds_the_key_a_dataset_was_made_with(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(keys.KEY_ENV, "k")
    assert keys.dataset_secret({"key_fingerprint": keys.key_fingerprint("k")}) == "k"
    monkeypatch.setenv(keys.SALT_ENV, "s")
    assert keys.dataset_secret({"key_fingerprint": keys.key_fingerprint("s")}) == "s"
    with pytest.raises(UserError, match="keyed with another secret"):
        keys.dataset_secret({"key_fingerprint": keys.key_fingerprint("elsewhere")})
