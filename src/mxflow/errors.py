"""Errors an administrator reads: each names where the problem is and how to fix it."""

from __future__ import annotations


class MxflowError(Exception):
    """An error reported to the user as one line, never as a traceback."""


class ConfigError(MxflowError):
    """A configuration value is wrong: names the file, the key path, what was found and the fix."""

    def __init__(self, file: str, key: str, found: object, expected: str) -> None:
        self.file = file
        self.key = key
        self.found = found
        self.expected = expected
        super().__init__(f"{file}: {key}: found {found!r}; expected {expected}")
