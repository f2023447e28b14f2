"""Errors meant for the user: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (model, flag, file): shown as ``error: <message>`` without a traceback."""

    exit_code = 2


class SpaceError(UserError):
    """A search-space file that cannot be used; names the file, the key and the reason."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        super().__init__(f"{path}: {key}: {reason}")
        self.path = path
        self.key = key
        self.reason = reason
