"""Attack 1: malware the scanner never sees must not be delivered.

A file nested below the MIME depth limit, or inside more levels of zip than the archive
limit, once reached the inbox unscanned. Now anything the node could not scan is a
verdict of its own (symbol UNSCANNABLE): quarantined in the malware class by default,
or tempfailed when `[filter] unscannable_action = "tempfail"`.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from mxflow.roles.build import build_node
from tests.engine.helpers import RawSmtp, maildir_gateway, stuffed

EXE = b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00" + b"\x00" * 200


def nested_mime(depth: int) -> bytes:
    inner = (
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename=report.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + __import__("base64").encodebytes(EXE).replace(b"\n", b"\r\n")
    )
    for level in range(depth):
        boundary = f"b{level}".encode()
        inner = (
            b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n"
            b"--" + boundary + b"\r\n" + inner + b"\r\n--" + boundary + b"--\r\n"
        )
    return (
        b"From: a@fabrikam.test\r\nTo: bob@contoso.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
        + inner
    )


def nested_zip(levels: int) -> bytes:
    data, name = EXE, "invoice.exe"
    for level in range(levels):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr(name, data)
        data, name = buf.getvalue(), f"layer{level}.zip"
    b64 = __import__("base64").encodebytes(data).replace(b"\n", b"\r\n")
    return (
        b"From: a@fabrikam.test\r\nTo: bob@contoso.com\r\nSubject: zips\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="z"\r\n\r\n--z\r\n'
        b"Content-Type: text/plain\r\n\r\nsee attached\r\n--z\r\n"
        b"Content-Type: application/zip\r\nContent-Disposition: attachment; filename=docs.zip\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"\r\n--z--\r\n"
    )


@pytest.mark.parametrize(
    ("raw", "action", "reply"),
    [
        (nested_mime(25), "quarantine", (250, "quarantined as")),
        (nested_zip(5), "quarantine", (250, "quarantined as")),
        (nested_mime(25), "tempfail", (451, "4.7.1 content could not be scanned")),
    ],
    ids=["mime-25-deep", "zip-5-deep", "tempfail-policy"],
)
async def test_unscannable_content_is_never_delivered(
    tmp_path: Path, raw: bytes, action: str, reply: tuple[int, str]
) -> None:
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        extra={"filter": {"checks": ["attachments"], "unscannable_action": action}},
    )
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO c.fabrikam.test")
        code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(raw))
        await client.close()
        assert (code, reply[1] in text) == (reply[0], True), text
        assert gw.spool.ids() == []
        if action == "quarantine":
            (entry,) = gw.quarantine.list()  # type: ignore[union-attr]
            assert entry.kind == "malware"  # released by an administrator only
            assert any(s[0] == "UNSCANNABLE" for s in entry.symbols)
