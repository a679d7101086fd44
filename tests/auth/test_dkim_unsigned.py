"""An unsigned message is answered without DKIM's worker thread; a signature that names no
key is still judged (permerror), not mistaken for no signature at all."""

from __future__ import annotations

import asyncio

from mxflow.auth.dkim import verify_dkim
from mxflow.auth.txt import TxtAnswer

BODY = b"\r\nHello.\r\n"
HEAD = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n"


class NoDns:
    """A TXT lookup that must never be asked: these messages name no key."""

    async def txt(self, name: str) -> TxtAnswer:
        raise AssertionError(f"unexpected lookup of {name}")


def test_unsigned_message_has_no_results() -> None:
    assert asyncio.run(verify_dkim(HEAD + BODY, NoDns())) == []


def test_signature_without_domain_is_permerror() -> None:
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; s=sel; h=from; bh=x; b=y\r\n" + HEAD + BODY
    results = asyncio.run(verify_dkim(broken, NoDns()))
    assert [r.result for r in results] == ["permerror"]


def test_signature_field_in_the_body_is_no_signature() -> None:
    text = HEAD + b"\r\nDKIM-Signature: v=1; d=example.org; s=sel\r\n"
    assert asyncio.run(verify_dkim(text, NoDns())) == []
