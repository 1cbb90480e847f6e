"""Errors a user can fix, as opposed to bugs.

The CLI prints a :class:`UserError` as one line (``error: ...``) and exits with status 2, so that a wrong
path, a bad setting or a missing optional dependency never ends in a traceback. Operating-system failures
that are the environment's fault (disk full, read-only or unwritable output) get the same treatment through
:func:`describe_os_error`.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """A problem with the user's input, configuration or environment; the message says how to fix it."""

    def __str__(self) -> str:
        """One line even when raised in a DataLoader worker: torch re-raises it in the main process with the
        worker's whole traceback as the message ("Caught UserError in DataLoader worker process 0. Original
        Traceback ..."), whose last line is ``ssl_radiology.errors.UserError: <the original message>``."""
        text = super().__str__()
        if "Original Traceback" not in text:
            return text
        last = text.strip().splitlines()[-1]
        return last.split(f"{type(self).__name__}: ", 1)[-1]


def describe_os_error(exc: OSError) -> str | None:
    """A one-line explanation for environment failures, or ``None`` for errors that are bugs."""
    where = exc.filename or "the output folder"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing {where}; free space and run the same command again (finished work is kept)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {where}: {exc.strerror}; choose a writable --out folder"
    return None


def require_module(module: str, feature: str, package: str | None = None) -> None:
    """Fail with an install hint when an optional dependency of ``feature`` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UserError(
            f"{feature} needs the optional package '{package or module}': pip install {package or module}"
        )
