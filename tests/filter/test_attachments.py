"""The attachment policy judges content, not names, and opens archives within limits."""

from __future__ import annotations

import asyncio
import gzip
import io
import time
import zipfile

import pytest

from mxflow.checks import attachments
from mxflow.checks.attachments import AttachmentCheck
from mxflow.checks.pipeline import FilterPipeline
from mxflow.config.filter import FilterPolicy
from mxflow.mail import Action, Phase
from tests.filter.helpers import context, message

PE = b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 56 + b"PE\x00\x00" + b"\x00" * 200
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"
ISO = b"\0" * 0x8000 + b"\x01CD001\x01" + b"\0" * 2041  # an ISO 9660 volume descriptor
JS_DROPPER = b'var s = new ActiveXObject("WScript.Shell"); s.Run("calc.exe");\n'


def zipped(*files: tuple[str, bytes], encrypted_flag: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    data = bytearray(buffer.getvalue())
    if encrypted_flag:  # zipfile cannot encrypt: set the "encrypted" bit as a real one would
        for magic, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = data.find(magic)
            while at != -1:
                data[at + offset] |= 0x1
                at = data.find(magic, at + 4)
    return bytes(data)


def symbols(raw: bytes, policy: FilterPolicy | None = None) -> dict[str, str]:
    result = asyncio.run(AttachmentCheck(policy or FilterPolicy()).check(context(raw)))
    return {s.name: s.detail for s in result.symbols}


def attach(filename: str, ctype: str, data: bytes) -> bytes:
    return message(attachments=[(filename, ctype, data)])


def test_a_clean_pdf_passes() -> None:
    assert symbols(attach("report.pdf", "application/pdf", PDF)) == {}


@pytest.mark.parametrize(
    ("filename", "ctype", "data", "symbol"),
    [
        ("setup.exe", "application/octet-stream", PE, "MALWARE_EXECUTABLE"),
        ("invoice.pdf", "application/pdf", PE, "MALWARE_EXECUTABLE"),  # renamed executable
        ("photo.jpg", "image/jpeg", b"\x7fELF\x02\x01\x01" + b"\x00" * 60, "MALWARE_EXECUTABLE"),
        ("invoice.pdf.exe", "application/octet-stream", b"just text", "MALWARE_DOUBLE_EXT"),
        ("readme.txt.js", "text/plain", b"// nothing", "MALWARE_DOUBLE_EXT"),
        ("order.doc", "application/msword", JS_DROPPER, "MALWARE_SCRIPT"),
        ("scan.pdf", "application/pdf", zipped(("a.txt", b"hello")), "MALWARE_DISGUISED"),
        ("payload.cmd", "application/octet-stream", b"@echo off", "MALWARE_EXECUTABLE"),
        ("statement.pdf", "application/pdf", ISO, "MALWARE_DISK_IMAGE"),
        (
            "backup.dat",
            "application/octet-stream",
            b"\0" * 4096 + b"conectix" + b"\0" * 504,
            "MALWARE_DISK_IMAGE",
        ),
    ],
)
def test_dangerous_content_is_found_whatever_its_name(
    filename: str, ctype: str, data: bytes, symbol: str
) -> None:
    found = symbols(attach(filename, ctype, data))
    assert symbol in found, found
    assert filename in found[symbol]


def test_executable_inside_a_nested_zip_is_found() -> None:
    inner = zipped(("tool.pdf", PE))
    outer = zipped(("docs/inner.zip", inner), ("notes.txt", b"see inner"))
    found = symbols(attach("docs.zip", "application/zip", outer))
    assert "MALWARE_EXECUTABLE" in found
    assert "docs.zip/docs/inner.zip/tool.pdf" in found["MALWARE_EXECUTABLE"]


def test_nesting_beyond_the_depth_limit_is_reported_not_followed() -> None:
    data = zipped(("x.txt", b"deep"))
    for level in range(6):
        data = zipped((f"level{level}.zip", data))
    found = symbols(attach("deep.zip", "application/zip", data))
    assert "ARCHIVE_LIMIT" in found


def test_zip_bomb_is_stopped_quickly_with_bounded_memory() -> None:
    bomb = zipped(("zeros.bin", b"\0" * (60 * 1024 * 1024)))
    assert len(bomb) < 200_000
    started = time.perf_counter()
    found = symbols(attach("bomb.zip", "application/zip", bomb))
    assert time.perf_counter() - started < 2.0
    assert "MALWARE_ARCHIVE_BOMB" in found


async def test_a_small_message_with_a_bomb_does_not_block_the_event_loop() -> None:
    # 150 members of 1 MiB of zeros: a 230 KB message that expands to the 100 MB limit
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for i in range(150):
            archive.writestr(f"f{i}.txt", b"\0" * (1024 * 1024 - 1))
    raw = attach("docs.zip", "application/zip", buffer.getvalue())
    assert len(raw) < 256 * 1024
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    result = await AttachmentCheck(FilterPolicy()).check(context(raw))
    await asyncio.sleep(0.02)  # let the ticker see the gap, if there was one
    ticking.cancel()
    assert "MALWARE_ARCHIVE_BOMB" in {s.name for s in result.symbols}
    assert max(gaps) < 0.1  # the loop kept serving other sessions


def test_a_zip_of_very_many_entries_is_refused_before_its_directory_is_read() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(20_000):
            archive.writestr(zipfile.ZipInfo(f"{i:x}"), b"")
    data = buffer.getvalue()
    started = time.perf_counter()
    found = symbols(attach("many.zip", "application/zip", data))
    assert time.perf_counter() - started < 0.5
    assert "20000 files" in found["ARCHIVE_LIMIT"]
    # the end record's count can lie; the directory's size cannot be smaller than it is
    end = data.rfind(b"PK\x05\x06")
    lying = bytearray(data)
    lying[end + 8 : end + 12] = (1).to_bytes(2, "little") * 2
    assert (
        "too many files"
        in symbols(attach("many.zip", "application/zip", bytes(lying)))["ARCHIVE_LIMIT"]
    )


async def test_an_attachment_check_that_does_not_finish_tempfails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def stuck(view: object, policy: object) -> list[object]:
        time.sleep(0.5)
        return []

    monkeypatch.setattr(attachments, "inspect_attachments", stuck)
    slow = AttachmentCheck(FilterPolicy(), timeout=0.05)
    raw = attach("a.zip", "application/zip", zipped(("a.txt", b"x" * 100_000)))
    verdict = await FilterPipeline(checks=[slow]).evaluate(context(raw), Phase.DATA)
    assert "ATTACHMENTS_TIMEOUT" in {s.name for s in verdict.symbols}
    assert verdict.action is Action.TEMPFAIL  # never delivered unexamined


def test_gzip_bomb_is_stopped() -> None:
    bomb = gzip.compress(b"\0" * (40 * 1024 * 1024), mtime=0)
    found = symbols(attach("logs.gz", "application/gzip", bomb))
    assert "MALWARE_ARCHIVE_BOMB" in found


def test_too_many_files_hit_the_file_limit() -> None:
    many = zipped(*((f"f{i}.txt", b"x") for i in range(30)))
    found = symbols(attach("many.zip", "application/zip", many), FilterPolicy(archive_max_files=10))
    assert "ARCHIVE_LIMIT" in found


def test_encrypted_member_is_flagged() -> None:
    found = symbols(
        attach("secret.zip", "application/zip", zipped(("a.exe", PE), encrypted_flag=True))
    )
    assert "ARCHIVE_ENCRYPTED" in found


def test_corrupt_archive_is_reported_not_raised() -> None:
    found = symbols(attach("broken.zip", "application/zip", b"PK\x03\x04" + b"\x00" * 50))
    assert "ARCHIVE_CORRUPT" in found


def test_office_macros_are_flagged_in_ooxml_and_ole() -> None:
    docm = zipped(("[Content_Types].xml", b"<Types/>"), ("word/vbaProject.bin", b"\xd0\xcf"))
    assert "OFFICE_MACRO" in symbols(attach("q3.docm", "application/vnd.ms-word", docm))
    ole = (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
        + b"\x00" * 500
        + "_VBA_PROJECT".encode("utf-16-le")
        + b"\x00" * 100
    )
    assert "OFFICE_MACRO" in symbols(attach("q3.doc", "application/msword", ole))
    plain_ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600
    assert symbols(attach("q3.doc", "application/msword", plain_ole)) == {}


def test_unix_script_is_only_noted() -> None:
    found = symbols(attach("rotate", "text/x-sh", b"#!/bin/sh\nlogrotate -f /etc/x\n"))
    assert set(found) == {"UNIX_SCRIPT"}


def test_malware_attachment_is_quarantined_by_the_pipeline() -> None:
    raw = attach("invoice.pdf", "application/pdf", PE)
    verdict = asyncio.run(FilterPipeline().evaluate(context(raw), Phase.DATA))
    assert verdict.action is Action.QUARANTINE
    assert verdict.reason.startswith("malware: invoice.pdf")
