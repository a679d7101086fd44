"""Errors an administrator reads: each names where the problem is and how to fix it."""

from __future__ import annotations


class MxflowError(Exception):
    """An error reported to the user as one line, never as a traceback.

    The root of every exception mxflow defines, so a caller can tell mxflow's own errors
    from bugs. `exit_status` is what `mxflow` exits with when one reaches the command
    line (see `mxflow --help`): 2 for a usage or configuration error.
    """

    exit_status = 2


class Unavailable(MxflowError):
    """Something the command needs is in use or missing at run time (a port another
    process holds, a data directory another node owns): exit status 3."""

    exit_status = 3


class ConfigError(MxflowError):
    """A configuration value is wrong: names the file, the key path, what was found and the fix."""

    def __init__(self, file: str, key: str, found: object, expected: str) -> None:
        self.file = file
        self.key = key
        self.found = found
        self.expected = expected
        super().__init__(f"{file}: {key}: found {found!r}; expected {expected}")


class ConfigErrors(ConfigError):
    """Several configuration errors at once; its fields are those of the first, `errors`
    holds them all, and its text is one line per error."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.file, first.key, first.found, first.expected)
        self.errors = list(errors)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
