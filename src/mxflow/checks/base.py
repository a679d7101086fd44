"""The one interface every check implements (the result vocabulary is `mxflow.mail`)."""

from __future__ import annotations

from typing import Protocol

from mxflow.mail import CheckResult, MessageContext, Phase


class Check(Protocol):
    """A check: a name, the phase it runs in, and an async `check()`."""

    name: str
    phase: Phase

    async def check(self, ctx: MessageContext) -> CheckResult: ...
