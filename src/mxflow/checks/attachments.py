"""The attachment policy: malware protection that works without ClamAV.

Looks at content, not names: executables and scripts by their bytes, double extensions
(`invoice.pdf.exe`), disguised types (a name or declared type that says document while
the bytes say executable or archive), Office macros, and inside archives — zip, nested zip
and gzip — with limits on depth, file count, total size and compression ratio, so an
archive bomb costs bounded time and memory and is itself reported. Findings that mean
"do not deliver" carry the `MALWARE_` prefix (quarantined by policy, never delivered).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Protocol

from mxflow import mime
from mxflow.checks.filetypes import (
    DOCUMENT_EXTENSIONS,
    EXECUTABLE_EXTENSIONS,
    KIND_EXTENSIONS,
    extensions,
    has_vba,
    sniff,
)
from mxflow.config.filter import FilterPolicy
from mxflow.errors import MxflowError
from mxflow.mail import UNSCANNABLE, CheckResult, MessageContext, Phase

DEFAULT_SCORES = {
    "MALWARE_EXECUTABLE": 20.0,
    "MALWARE_SCRIPT": 20.0,
    "MALWARE_DOUBLE_EXT": 20.0,
    "MALWARE_DISGUISED": 20.0,
    "MALWARE_ARCHIVE_BOMB": 20.0,
    "MALWARE_DISK_IMAGE": 20.0,
    "OFFICE_MACRO": 4.0,
    "UNIX_SCRIPT": 0.5,
    "ARCHIVE_ENCRYPTED": 3.0,
    "ARCHIVE_LIMIT": 2.0,
    "ARCHIVE_CORRUPT": 1.0,
}
_CHUNK = 64 * 1024
_ARCHIVES = ("zip", "gzip")
_CD_BYTES_PER_FILE = 300  # a directory entry is 46 bytes plus the name: ample for real names
_DECLARED_KINDS = {
    "application/pdf": "pdf",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "text/plain": "other",
}


@dataclass
class Finding:
    symbol: str
    detail: str


@dataclass
class _Budget:
    """What is left of the archive limits for one message."""

    files: int
    total: int
    findings: list[Finding] = field(default_factory=list)


class ArchiveBomb(MxflowError):
    pass


def inspect_file(
    name: str,
    declared: str,
    data: bytes,
    policy: FilterPolicy,
    budget: _Budget,
    *,
    depth: int = 0,
) -> None:
    """Inspect one file (an attachment or an archive member), adding findings to `budget`."""
    where = name or declared or "attachment"
    kind = sniff(data)
    exts = extensions(name)
    last = exts[-1] if exts else ""
    if kind == "executable":
        budget.findings.append(Finding("MALWARE_EXECUTABLE", f"{where}: executable content"))
        return
    if kind == "diskimage":
        budget.findings.append(Finding("MALWARE_DISK_IMAGE", f"{where}: disk image (ISO/VHD)"))
        return
    if kind == "script" and last != "txt":
        budget.findings.append(Finding("MALWARE_SCRIPT", f"{where}: script content"))
        return
    if kind == "shebang":
        budget.findings.append(Finding("UNIX_SCRIPT", f"{where}: #! script"))
        return
    if len(exts) >= 2 and last in EXECUTABLE_EXTENSIONS and exts[-2] in DOCUMENT_EXTENSIONS:
        budget.findings.append(Finding("MALWARE_DOUBLE_EXT", f"{where}: double extension"))
        return
    if last in EXECUTABLE_EXTENSIONS and kind not in ("zip", "ole"):
        budget.findings.append(Finding("MALWARE_EXECUTABLE", f"{where}: .{last} file"))
        return
    if _disguised(kind, last, declared):
        budget.findings.append(
            Finding(
                "MALWARE_DISGUISED", f"{where}: named/declared as {last or declared}, is {kind}"
            )
        )
        return
    if kind == "ole" and has_vba(data, kind):
        budget.findings.append(Finding("OFFICE_MACRO", f"{where}: VBA macros"))
        return
    if kind == "zip":
        _inspect_zip(where, data, policy, budget, depth + 1)
    elif kind == "gzip":
        _inspect_gzip(where, data, policy, budget, depth + 1)


def _disguised(kind: str, last: str, declared: str) -> bool:
    """The bytes are an archive/OLE while the name or type claims a harmless document."""
    if kind in ("other", "script", "shebang"):
        return False
    if last and last in DOCUMENT_EXTENSIONS and last not in KIND_EXTENSIONS.get(kind, set()):
        return kind in ("zip", "gzip", "ole", "rar", "7z") and last in (
            "pdf",
            "txt",
            "jpg",
            "jpeg",
            "png",
            "gif",
            "bmp",
            "csv",
        )
    expected = _DECLARED_KINDS.get(declared)
    return expected is not None and expected != "other" and kind in ("zip", "gzip", "rar", "7z")


def _too_deep(where: str, depth: int, policy: FilterPolicy, budget: _Budget) -> bool:
    if depth <= policy.archive_max_depth:
        return False
    budget.findings.append(Finding("ARCHIVE_LIMIT", f"{where}: nested deeper than {depth - 1}"))
    return True


def _central_directory(data: bytes) -> tuple[int, int] | None:
    """(entries, bytes) of a zip's central directory as its end record declares them, so
    an archive of a million tiny entries is refused before zipfile reads them all; None
    when there is no end record (zipfile will say the archive is corrupt)."""
    at = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if at < 0 or at + 22 > len(data):
        return None
    entries, size = struct.unpack_from("<HI", data, at + 10)
    if entries == 0xFFFF or size == 0xFFFFFFFF:  # ZIP64: more than mail ever carries
        return (1 << 32), (1 << 32)
    return entries, size


def _inspect_zip(
    where: str, data: bytes, policy: FilterPolicy, budget: _Budget, depth: int
) -> None:
    if _too_deep(where, depth, policy, budget):
        return
    directory = _central_directory(data)
    if directory is not None:
        entries, size = directory
        if entries > budget.files or size > budget.files * _CD_BYTES_PER_FILE:
            # zipfile would read the whole directory first: time and memory by entry count
            detail = f"{where}: {entries} files, directory of {size} bytes: too many files"
            budget.findings.append(Finding("ARCHIVE_LIMIT", detail))
            return
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        budget.findings.append(Finding("ARCHIVE_CORRUPT", f"{where}: {exc}"))
        return
    names = {m.filename.lower() for m in members}
    if any(n.endswith("vbaproject.bin") for n in names):
        budget.findings.append(Finding("OFFICE_MACRO", f"{where}: vbaProject.bin"))
    for member in members:
        if member.is_dir():
            continue
        budget.files -= 1
        if budget.files < 0:
            budget.findings.append(Finding("ARCHIVE_LIMIT", f"{where}: too many files"))
            return
        inner = f"{where}/{member.filename}"
        if member.flag_bits & 0x1:
            budget.findings.append(Finding("ARCHIVE_ENCRYPTED", inner))
            continue
        ratio = member.file_size / max(member.compress_size, 1)
        if ratio > policy.archive_max_ratio and member.file_size > 1024 * 1024:
            budget.findings.append(
                Finding("MALWARE_ARCHIVE_BOMB", f"{inner}: ratio {ratio:.0f}:1 declared")
            )
            return
        try:
            with archive.open(member) as stream:
                content = _read_limited(stream, member.compress_size, policy, budget)
        except ArchiveBomb as exc:
            budget.findings.append(Finding("MALWARE_ARCHIVE_BOMB", f"{inner}: {exc}"))
            return
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            budget.findings.append(Finding("ARCHIVE_CORRUPT", f"{inner}: {exc}"))
            continue
        except RuntimeError as exc:  # encrypted without the flag, unsupported method
            budget.findings.append(Finding("ARCHIVE_ENCRYPTED", f"{inner}: {exc}"))
            continue
        inspect_file(inner, "", content, policy, budget, depth=depth)
        if any(f.symbol.startswith("MALWARE_") for f in budget.findings):
            return


class _Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _read_limited(stream: _Stream, packed: int, policy: FilterPolicy, budget: _Budget) -> bytes:
    """The decompressed bytes of `stream` (`packed` bytes compressed), raising ArchiveBomb
    as soon as the message's total or the ratio limit is passed."""
    out = io.BytesIO()
    while chunk := stream.read(_CHUNK):
        out.write(chunk)
        budget.total -= len(chunk)
        if budget.total < 0:
            raise ArchiveBomb("expands beyond the total size limit")
        size = out.tell()
        if size > 1024 * 1024 and size / max(packed, 1) > policy.archive_max_ratio:
            raise ArchiveBomb(f"ratio above {policy.archive_max_ratio:.0f}:1")
    return out.getvalue()


def _inspect_gzip(
    where: str, data: bytes, policy: FilterPolicy, budget: _Budget, depth: int
) -> None:
    if _too_deep(where, depth, policy, budget):
        return
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            content = _read_limited(stream, len(data), policy, budget)
    except ArchiveBomb as exc:
        budget.findings.append(Finding("MALWARE_ARCHIVE_BOMB", f"{where}: {exc}"))
        return
    except (OSError, EOFError, zlib.error) as exc:
        budget.findings.append(Finding("ARCHIVE_CORRUPT", f"{where}: {exc}"))
        return
    inner = where[:-3] if where.lower().endswith(".gz") else where + ".ungz"
    inspect_file(inner, "", content, policy, budget, depth=depth)


def inspect_attachments(view: mime.MimeView, policy: FilterPolicy) -> list[Finding]:
    budget = _Budget(files=policy.archive_max_files, total=policy.archive_max_total)
    for attachment in view.attachments:
        inspect_file(attachment.filename, attachment.content_type, attachment.data, policy, budget)
    return budget.findings


@dataclass
class AttachmentCheck:
    policy: FilterPolicy
    name: str = "attachments"
    phase: Phase = Phase.DATA
    # the work is bounded by the archive limits; a check that still did not finish must not
    # let what it had not looked at through: tempfail, as for a scanner that is down
    timeout: float = 30.0
    fail_closed: bool = True

    def _run(self, ctx: MessageContext) -> list[Finding]:
        return inspect_attachments(mime.view(ctx), self.policy)

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        # a small message can hold an archive that expands to archive_max_total: opening
        # archives (and parsing big messages) happens off the event loop
        if len(ctx.raw) > 256 * 1024 or any(
            sniff(a.data[:8]) in _ARCHIVES for a in mime.view(ctx).attachments
        ):
            findings = await asyncio.to_thread(self._run, ctx)
        else:
            findings = self._run(ctx)
        seen: set[str] = set()
        for finding in findings:
            if finding.symbol in seen:
                continue
            seen.add(finding.symbol)
            score = self.policy.score(finding.symbol, DEFAULT_SCORES[finding.symbol])
            result.add(finding.symbol, score, finding.detail)
        unscanned = _unscanned(mime.view(ctx), findings)
        if unscanned and not any(f.symbol.startswith("MALWARE_") for f in findings):
            ask_unscannable(result, self.policy, "; ".join(unscanned))
        return result


def _unscanned(view: mime.MimeView, findings: list[Finding]) -> list[str]:
    """What the walk or the archive limits left unread: a part nested below the MIME
    depth limit, parts past the count limit, archive members too deep, too many or
    encrypted. Each may be the one that carries the malware."""
    why = [f"MIME {limit} limit" for limit in view.limits if limit in ("depth", "parts")]
    why += [f.detail for f in findings if f.symbol in ("ARCHIVE_LIMIT", "ARCHIVE_ENCRYPTED")]
    return why


def ask_unscannable(result: CheckResult, policy: FilterPolicy, detail: str) -> None:
    """Content the node could not scan is a verdict of its own, never a silent pass:
    `unscannable_action` (quarantine, tempfail or reject)."""
    result.add(UNSCANNABLE, 0.0, detail)
    result.action = policy.unscannable_action
    result.reason = f"content could not be scanned: {detail[:200]}"
