"""Where ssl-radiology keeps per-user state: generated corpora, prepared named sources, feature caches and
the installation key. One tiny module so that :mod:`.keys` can find the key without importing the source
registry (which imports ``prepare``, which imports ``keys``)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SSL_RAD_CACHE"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$SSL_RAD_CACHE``, else ``~/.cache/ssl-radiology``."""
    return Path(
        cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ssl-radiology"
    ).expanduser()
