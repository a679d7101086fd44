"""ClamAV through clamd's socket, with the INSTREAM command.

The whole message goes to clamd (it decodes MIME and archives itself) as `zINSTREAM\\0`
followed by chunks, each a 4-byte big-endian length and the bytes, and a zero length; the
answer is `stream: OK`, `stream: NAME FOUND` or `... ERROR`. A found signature is the
`CLAM_VIRUS` symbol (never delivered); when clamd cannot be reached or errs the message is
tempfailed (4xx), because a configured scanner that is down must not let malware through.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import dataclass

from mxflow.checks.attachments import ask_unscannable
from mxflow.config.filter import ClamdAddress, FilterPolicy
from mxflow.errors import MxflowError
from mxflow.mail import Action, CheckResult, MessageContext, Phase

log = logging.getLogger("mxflow.checks.clamav")

CHUNK = 256 * 1024
SIZE_LIMIT_HINT = 1024 * 1024  # a hang-up after this much streamed is clamd's size limit


class ClamdError(MxflowError):
    """clamd could not be reached, or answered with an error."""


class ClamdSizeLimit(ClamdError):
    """The message is larger than clamd's StreamMaxLength: it was not scanned."""


async def _open(address: ClamdAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    path = address.unix_path
    if path is not None:
        return await asyncio.open_unix_connection(path)
    host, port = address.host_port()
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def ping(address: ClamdAddress, wait: float = 2.0) -> bool:
    """True when clamd answers PONG."""
    try:
        reader, writer = await asyncio.wait_for(_open(address), wait)
    except (OSError, TimeoutError, ValueError):
        return False
    try:
        writer.write(b"zPING\0")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(64), wait)
        return answer.rstrip(b"\0\n") == b"PONG"
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def scan_bytes(address: ClamdAddress, data: bytes) -> str | None:
    """The signature name clamd finds in `data`, or None when clean; ClamdError otherwise."""
    try:
        reader, writer = await _open(address)
    except (OSError, ValueError) as exc:
        raise ClamdError(f"cannot reach clamd at {address.text}: {exc}") from exc
    sent = 0
    broken: OSError | None = None
    try:
        writer.write(b"zINSTREAM\0")
        try:
            for start in range(0, len(data), CHUNK):
                chunk = data[start : start + CHUNK]
                writer.write(struct.pack("!I", len(chunk)) + chunk)
                await writer.drain()
                sent += len(chunk)
            writer.write(struct.pack("!I", 0))
            await writer.drain()
        except OSError as exc:
            broken = exc  # clamd stops reading past its StreamMaxLength and hangs up
        try:
            answer = (await reader.read(4096)).rstrip(b"\0\n").decode("utf-8", "replace")
        except OSError as exc:
            answer, broken = "", broken or exc
    finally:
        writer.close()
    if "size limit exceeded" in answer or (broken and not answer and sent >= SIZE_LIMIT_HINT):
        raise ClamdSizeLimit(f"{len(data)} bytes is above clamd's StreamMaxLength")
    if broken and not answer:
        raise ClamdError(f"clamd at {address.text}: {broken}")
    if answer.endswith(" FOUND"):
        return answer.removeprefix("stream:").removesuffix(" FOUND").strip()
    if answer.endswith("OK"):
        return None
    raise ClamdError(f"clamd at {address.text} answered {answer!r}")


@dataclass
class ClamavCheck:
    policy: FilterPolicy
    address: ClamdAddress
    name: str = "clamav"
    phase: Phase = Phase.DATA
    timeout: float = 60.0  # scanning big archives takes time; budget of its own
    fail_closed: bool = True  # a scan that did not finish tempfails: never deliver unscanned
    failures: int = 0  # clamd unreachable, in a row

    def _unreachable(self, exc: Exception) -> None:
        """A scanner that cannot be reached is an operator's problem: say so, but not for
        every message (the 1st, 2nd, 4th, 8th ... failure in a row)."""
        self.failures += 1
        if self.failures & (self.failures - 1) == 0:
            log.warning(
                "clamd at %s unreachable (%d failures in a row): %s; mail is tempfailed",
                self.address.text,
                self.failures,
                exc,
            )

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        if len(ctx.raw) > self.policy.max_scan_size:
            result.add("CLAM_SKIPPED_SIZE", 0.0, f"{len(ctx.raw)} bytes")
            ask_unscannable(result, self.policy, f"{len(ctx.raw)} bytes: above max_scan_size")
            return result
        try:
            found = await scan_bytes(self.address, ctx.raw)
        except ClamdSizeLimit as exc:
            result.add("CLAM_SKIPPED_SIZE", 0.0, str(exc))
            ask_unscannable(result, self.policy, str(exc))
            return result
        except ClamdError as exc:
            self._unreachable(exc)
            result.add("CLAM_UNAVAILABLE", 0.0, str(exc))
            result.action = Action.TEMPFAIL
            result.reason = "malware scanner unavailable, try again later"
            return result
        self.failures = 0
        if found:
            result.add("CLAM_VIRUS", self.policy.score("CLAM_VIRUS", 20.0), found)
        return result
