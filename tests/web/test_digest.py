"""Quarantine digests over a real gateway and sink: each recipient gets one digest, its
signed link releases the message to that recipient only, and a forged link does nothing."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.request
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from mxflow.store.quarantine import HELD, RELEASED
from mxflow.web.digest import Grant, sign, verify
from tests.clirun import mxflow
from tests.engine.helpers import RawSmtp, maildir_messages, message, stuffed, wait_for
from tests.web.helpers import GTUBE, lab


async def _http(url: str, data: bytes | None = None) -> tuple[int, str]:
    def go() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, data=data, timeout=20) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(go)


def test_tokens_are_signed_and_expire() -> None:
    key = b"k" * 32
    token = sign(key, Grant("Q1", "bob@contoso.com", "release", 2e9))
    assert verify(key, token) == Grant("Q1", "bob@contoso.com", "release", 2e9)
    assert verify(b"x" * 32, token) is None
    body, mac = token.split(".")
    assert verify(key, body[:-2] + "xx." + mac) is None
    assert verify(key, token, now=2e9 + 1) is None


@pytest.mark.slow
async def test_digest_link_releases_to_the_asking_recipient_only(tmp_path: Path) -> None:
    async with lab(tmp_path) as lab_:
        client = await RawSmtp.open(lab_.gateway.address, lab_.gateway.port)
        await client.cmd("EHLO c.fabrikam.test")
        raw = message("Win big", message_id="<dig.1@fabrikam.test>", body=GTUBE)
        rcpts = ["bob@contoso.com", "carol@contoso.com"]
        code, text = await client.mail("spam@fabrikam.test", rcpts, stuffed(raw))
        await client.close()
        assert code == 250 and "quarantined" in text, text
        qid = text.split()[-1]

        code, out, err = await mxflow("web", "--config", str(lab_.config_file), "digest")
        assert code == 0 and "2 digest(s)" in out, err
        code, out, _ = await mxflow("web", "--config", str(lab_.config_file), "digest")
        assert "0 digest(s)" in out  # each message is listed once
        for rcpt in rcpts:
            await wait_for(lambda r=rcpt: len(maildir_messages(lab_.sink_config, r)) == 1)
        digest = message_from_bytes(
            maildir_messages(lab_.sink_config, "bob@contoso.com")[0], policy=default
        )
        body = digest.get_body().get_content()  # type: ignore[union-attr]
        assert "Win big" in body and "spam@fabrikam.test" in body
        link = re.search(r"Release: (\S+)", body)
        assert link is not None and link.group(1).startswith(lab_.url)

        # the link shows what it will do; a GET (a mail scanner) releases nothing
        status, page = await _http(link.group(1))
        assert status == 200 and "Release it to me" in page
        assert lab_.gateway.quarantine.get(qid).state == HELD  # type: ignore[union-attr]
        forged = link.group(1).replace(link.group(1).split("/q/")[1][:10], "eyJxIjoiQ")
        assert (await _http(forged, b""))[0] == 404

        status, page = await _http(link.group(1), b"")
        assert status == 200 and "on its way to <strong>bob@contoso.com" in page
        await wait_for(lambda: len(maildir_messages(lab_.sink_config, "bob@contoso.com")) == 2)
        await asyncio.sleep(1.5)
        assert len(maildir_messages(lab_.sink_config, "carol@contoso.com")) == 1  # digest only
        assert lab_.gateway.quarantine.get(qid).state == HELD  # type: ignore[union-attr]
        assert (await _http(link.group(1), b""))[0] == 409  # used once

        carol = message_from_bytes(
            maildir_messages(lab_.sink_config, "carol@contoso.com")[0], policy=default
        )
        carol_body = carol.get_body().get_content()  # type: ignore[union-attr]
        link = re.search(r"Release: (\S+)", carol_body)
        assert link is not None
        assert (await _http(link.group(1), b""))[0] == 200
        await wait_for(lambda: lab_.gateway.quarantine.get(qid).state == RELEASED)  # type: ignore[union-attr]
