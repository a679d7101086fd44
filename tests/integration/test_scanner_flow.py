"""A running gateway with the site's rspamd and spamd configured as docs/filter.md shows:
over SMTP, GTUBE is refused, a plain ham reaches the mailbox host carrying both scanners'
verdicts, and with both scanners down the ham still goes through."""

from __future__ import annotations

import email.utils
from pathlib import Path

from mxflow.checks.rspamd import ping as rspamd_ping
from mxflow.checks.spamd import ping as spamd_ping
from mxflow.config import load_config
from mxflow.config.filter import ClamdAddress
from mxflow.roles.build import build_node
from tests.conftest import require, unique_loopback
from tests.engine.helpers import (
    RawSmtp,
    maildir_messages,
    message,
    relay_gateway_toml,
    sink_config,
    stuffed,
    wait_for,
)
from tests.filter.helpers import GTUBE, RSPAMD, SPAMD


def gateway_toml(tmp_path: Path, sink: str, rspamd: str, spamd: str) -> Path:
    address = unique_loopback()
    path = tmp_path / "gateway.toml"
    path.write_text(
        relay_gateway_toml(
            "gateway",
            tmp_path / "gw",
            sink,
            address=address,
            extra=f"""
[filter]
checks = ["headers", "rspamd", "spamd"]   # the scanners' say alone, beside the headers

[filter.rspamd]
url = "{rspamd}"
timeout = 5

[filter.spamd]
address = "{spamd}"
timeout = 10
""",
        )
    )
    return path


def today(raw: bytes) -> bytes:
    """`raw` dated now: an old Date is a spam sign to both scanners."""
    date = email.utils.formatdate(localtime=True)
    return raw.replace(b"Fri, 27 Nov 2026 06:00:00 +0000", date.encode())


async def send(host: str, port: int, raw: bytes) -> tuple[int, str]:
    client = await RawSmtp.open(host, port)
    try:
        await client.cmd("EHLO mail.fabrikam.test")
        return await client.mail("alice@fabrikam.test", ["bob@contoso.com"], stuffed(raw))
    finally:
        await client.close()


async def test_gtube_refused_and_ham_delivered_with_both_verdicts(tmp_path: Path) -> None:
    require(await rspamd_ping(RSPAMD), f"rspamd at {RSPAMD} (.ci/services.d/rspamd.sh)")
    require(await spamd_ping(ClamdAddress(SPAMD)), f"spamd at {SPAMD} (.ci/services.d/spamd.sh)")
    sink_cfg = sink_config(tmp_path / "sink")
    async with build_node(sink_cfg) as sink:
        cfg = load_config(gateway_toml(tmp_path, f"{sink.address}:{sink.port}", RSPAMD, SPAMD))
        async with build_node(cfg) as gw:
            code, text = await send(gw.address, gw.port, today(message("offer", body=GTUBE)))
            assert code == 550, text
            assert "RSPAMD_SPAM" in text and "SPAMD_SPAM" in text, text
            ham = today(message("minutes", body="Hello Bob, the minutes are attached.\r\n"))
            code, text = await send(gw.address, gw.port, ham)
            assert code == 250, text
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
    got = maildir_messages(sink_cfg, "bob@contoso.com")[0]
    assert b"X-Spam-Flag: NO" in got


async def test_with_both_scanners_down_the_ham_still_goes_through(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    down = unique_loopback()
    async with build_node(sink_cfg) as sink:
        config = gateway_toml(
            tmp_path, f"{sink.address}:{sink.port}", f"http://{down}:9", f"{down}:9"
        )
        async with build_node(load_config(config)) as gw:
            code, text = await send(gw.address, gw.port, today(message("minutes")))
            assert code == 250, text
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
