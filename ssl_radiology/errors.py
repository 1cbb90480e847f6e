"""Errors a user can fix, as opposed to bugs.

The CLI prints a :class:`UserError` as one line (``error: ...``) and exits with status 2, so that a wrong
path, a bad setting or a missing optional dependency never ends in a traceback.
"""


class UserError(Exception):
    """A problem with the user's input, configuration or environment; the message says how to fix it."""
