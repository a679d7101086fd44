"""SMTP smuggling: no end-of-data variant but <CRLF>.<CRLF> ends DATA, and bare CR or LF
anywhere in DATA rejects the whole transmission (550 5.6.0) as ONE message — the
smuggled "second message" is never queued, and the session stays in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxflow.roles.build import build_node
from mxflow.store.trace import TraceStore
from tests.engine.helpers import RawSmtp, maildir_gateway, message, stuffed

SMUGGLED = (
    b"MAIL FROM:<admin@contoso.com>\r\nRCPT TO:<bob@contoso.com>\r\nDATA\r\n"
    b"From: admin@contoso.com\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n"
)

# Each fake end-of-data sequence a smuggling attack may use (and bare line ends).
VARIANTS = {
    "LF.LF": b"\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CR": b"\r.\r",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
    "CR.LF": b"\r.\n",
    "bare-LF-line": b"\nno CR here\r\n",
    "bare-CR-line": b"\rno LF here\r\n",
    "CRLF.NUL.CRLF": b"\r\n.\x00\r\n\n",
}


@pytest.fixture
def gateway_cfg(tmp_path: Path) -> object:
    return maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
    )


@pytest.mark.parametrize("name", list(VARIANTS))
async def test_smuggling_variant_is_one_rejected_message(gateway_cfg: object, name: str) -> None:
    async with build_node(gateway_cfg) as gw:  # type: ignore[arg-type]
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO attacker.example")
        head = message("carrier").rstrip(b"\r\n")
        payload = head + VARIANTS[name] + SMUGGLED + b".\r\n"
        code, text = await client.mail("eve@fabrikam.test", ["bob@contoso.com"], payload)
        assert (code, text[:5]) == (550, "5.6.0"), (name, code, text)
        # Exactly one reply for the whole transmission: the smuggled commands were data.
        code, text = await client.cmd("NOOP")
        assert code == 250, text
        # and the session still works for an honest message
        code, text = await client.mail(
            "eve@fabrikam.test", ["bob@contoso.com"], stuffed(message("honest"))
        )
        assert code == 250, text
        await client.close()
        assert len(gw.spool.ids()) <= 1
        assert gw.spool.committed == 1
    store = TraceStore(gateway_cfg.trace_db)  # type: ignore[attr-defined]
    rejected = [e for e in store.all() if e.event == "rejected"]
    store.close()
    assert len(rejected) == 1 and "5.6.0" in rejected[0].detail


async def test_dot_stuffing_is_undone_and_only_crlf_dot_crlf_ends_data(
    gateway_cfg: object,
) -> None:
    async with build_node(gateway_cfg) as gw:  # type: ignore[arg-type]
        client = await RawSmtp.open(gw.address, gw.port)
        await client.cmd("EHLO x.example")
        raw = message("dots", body=".\r\n..\r\n. \r\n.x\r\n")
        code, _ = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(raw))
        assert code == 250
        # an empty message (just the terminator) is accepted as empty
        code, _ = await client.mail("a@fabrikam.test", ["bob@contoso.com"], b".\r\n")
        assert code == 250
        await client.close()
    messages = sorted((gateway_cfg.data_dir / "mail" / "bob@contoso.com" / "new").iterdir())  # type: ignore[attr-defined]
    bodies = [p.read_bytes() for p in messages]
    assert any(b.endswith(raw) for b in bodies)
    assert any(b.endswith(b"\r\n") and b"Subject" not in b for b in bodies)
