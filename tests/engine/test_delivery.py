"""Delivery: STARTTLS both ways, deferral and retry, 5xx -> DSN, expiry, no bounce loops."""

from __future__ import annotations

from email import message_from_bytes
from pathlib import Path

from mxflow.config import NodeConfig
from mxflow.roles.build import build_node
from mxflow.roles.node import Node
from mxflow.store.trace import TraceStore
from tests.conftest import unique_loopback
from tests.engine.helpers import (
    RawSmtp,
    gateway_config,
    maildir_messages,
    message,
    node_config,
    sink_config,
    strip_received,
    stuffed,
    wait_for,
)


async def submit(
    gw: Node,
    raw: bytes,
    *,
    mail_from: str = "alice@fabrikam.test",
    rcpts: tuple[str, ...] = ("bob@contoso.com",),
) -> str:
    client = await RawSmtp.open(gw.address, gw.port)
    await client.cmd("EHLO client.fabrikam.test")
    code, text = await client.mail(mail_from, list(rcpts), stuffed(raw))
    await client.close()
    assert code == 250, text
    return text.rsplit(" ", 1)[1]


def events(cfg: NodeConfig, queue_id: str) -> list[str]:
    store = TraceStore(cfg.trace_db)
    try:
        return [e.event for e in store.by_queue_id(queue_id)]
    finally:
        store.close()


async def test_starttls_inbound_shows_in_received(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    async with build_node(sink_cfg) as sink:
        cfg = gateway_config(tmp_path / "gw", sink.address, sink.port, listen_tls="starttls")
        async with build_node(cfg) as gw:
            import asyncio
            import ssl

            reader, writer = await asyncio.open_connection(gw.address, gw.port)
            client = RawSmtp(reader, writer)
            assert (await client.read_reply())[0] == 220
            code, text = await client.cmd("EHLO c.fabrikam.test")
            assert "STARTTLS" in text
            assert (await client.cmd("STARTTLS"))[0] == 220
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            await writer.start_tls(ctx)
            code, text = await client.cmd("EHLO c.fabrikam.test")
            assert "STARTTLS" not in text
            raw = message("tls-in")
            code, text = await client.mail("alice@fabrikam.test", ["bob@contoso.com"], stuffed(raw))
            assert code == 250, text
            await client.close()
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
            got = strip_received(maildir_messages(sink_cfg, "bob@contoso.com")[0], 1)
            assert b"with ESMTPS" in got.split(b"\r\n\tid")[0]
            assert b"version=TLSv1." in got
            assert strip_received(got, 1) == raw


async def test_starttls_towards_a_downstream_that_requires_it(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink", tls="starttls", require_tls=True)
    async with build_node(sink_cfg) as sink:
        cfg = gateway_config(tmp_path / "gw", sink.address, sink.port, tls="required")
        async with build_node(cfg) as gw:
            raw = message("tls-out")
            queue_id = await submit(gw, raw)
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
            got = maildir_messages(sink_cfg, "bob@contoso.com")[0]
            assert b"with ESMTPS" in got.split(b"\r\n\tid")[0]  # the sink's Received
            assert strip_received(got, 2) == raw
            await wait_for(lambda: "delivered" in events(cfg, queue_id))


async def test_plaintext_policy_refused_by_tls_only_downstream_bounces(tmp_path: Path) -> None:
    sink_cfg = sink_config(
        tmp_path / "sink", tls="starttls", require_tls=True, domains=("contoso.com",)
    )
    async with build_node(sink_cfg) as sink:
        cfg = gateway_config(
            tmp_path / "gw", sink.address, sink.port, tls="none", domains=["contoso.com"]
        )
        async with build_node(cfg) as gw:
            queue_id = await submit(gw, message("plain"))
            # 530 5.7.0 from the downstream is permanent: bounced, not retried forever
            await wait_for(lambda: "bounced" in events(cfg, queue_id))
            assert maildir_messages(sink_cfg, "bob@contoso.com") == []


async def test_verify_policy_fails_on_self_signed_certificate(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink", tls="starttls")
    async with build_node(sink_cfg) as sink:
        verify = {"tls_name": "sink.lab.test"}
        cfg = gateway_config(
            tmp_path / "gw",
            sink.address,
            sink.port,
            tls="verify",
            domains=["contoso.com"],
            route=verify,
        )
        async with build_node(cfg) as gw:
            queue_id = await submit(gw, message("verify"))
            await wait_for(lambda: "deferred" in events(cfg, queue_id))
            assert maildir_messages(sink_cfg, "bob@contoso.com") == []
        # with the sink's certificate as the trusted CA the same route delivers
        cfg2 = gateway_config(
            tmp_path / "gw2",
            sink.address,
            sink.port,
            name="gateway2",
            tls="verify",
            domains=["contoso.com"],
            route=verify | {"ca_file": str(sink_cfg.data_dir / "tls" / "node.crt")},
        )
        async with build_node(cfg2) as gw2:
            await submit(gw2, message("verified"))
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)


async def test_downstream_down_then_back(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    cfg = gateway_config(tmp_path / "gw", sink_cfg.listeners[0].address, sink_cfg.listeners[0].port)
    async with build_node(cfg) as gw:
        raw = message("while-down")
        queue_id = await submit(gw, raw)
        await wait_for(lambda: "deferred" in events(cfg, queue_id))
        assert gw.spool.exists(queue_id)
        state = gw.spool.load_state(queue_id)
        assert state.rcpts["bob@contoso.com"].status == "deferred"
        assert state.next_attempt > 0
        async with build_node(sink_cfg):
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
            assert strip_received(maildir_messages(sink_cfg, "bob@contoso.com")[0], 2) == raw
            await wait_for(lambda: not gw.spool.exists(queue_id))
        # The trace is written by a background thread: wait for the row, not just the spool.
        await wait_for(lambda: events(cfg, queue_id)[-1:] == ["delivered"])


async def test_5xx_bounces_with_a_dsn_to_the_sender(tmp_path: Path) -> None:
    sink_cfg = sink_config(
        tmp_path / "sink",
        domains=("contoso.com", "fabrikam.test"),
        recipients=["bob@contoso.com", "alice@fabrikam.test"],
    )
    async with build_node(sink_cfg) as sink:
        cfg = gateway_config(tmp_path / "gw", sink.address, sink.port)
        async with build_node(cfg) as gw:
            raw = message("partly", message_id="<partly-1@fabrikam.test>")
            queue_id = await submit(gw, raw, rcpts=("bob@contoso.com", "nobody@contoso.com"))
            await wait_for(lambda: len(maildir_messages(sink_cfg, "alice@fabrikam.test")) == 1)
            assert len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1
            dsn_raw = strip_received(maildir_messages(sink_cfg, "alice@fabrikam.test")[0], 1)
            dsn = message_from_bytes(dsn_raw)
            assert dsn.get_content_type() == "multipart/report"
            assert dsn.get_param("report-type") == "delivery-status"
            parts = list(dsn.walk())
            types = [p.get_content_type() for p in parts]
            assert "message/delivery-status" in types
            assert "text/rfc822-headers" in types
            assert b"Final-Recipient: rfc822; nobody@contoso.com" in dsn_raw
            assert b"Action: failed" in dsn_raw
            assert b"Status: 5.1.1" in dsn_raw
            assert b"Diagnostic-Code: smtp; 550" in dsn_raw
            assert b"<partly-1@fabrikam.test>" in dsn_raw  # the original headers
            assert (
                b"bob@contoso.com"
                not in dsn_raw.split(b"message/delivery-status")[1].split(b"text/rfc822-headers")[0]
            )
            await wait_for(lambda: "dsn" in events(cfg, queue_id))


async def test_no_dsn_to_the_null_sender(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink", recipients=["bob@contoso.com"])
    async with build_node(sink_cfg) as sink:
        cfg = gateway_config(tmp_path / "gw", sink.address, sink.port)
        async with build_node(cfg) as gw:
            queue_id = await submit(
                gw, message("bounce"), mail_from="", rcpts=("nobody@contoso.com",)
            )
            await wait_for(lambda: "dsn-suppressed" in events(cfg, queue_id))
            assert "dsn" not in events(cfg, queue_id)
            await wait_for(lambda: not gw.spool.ids())


async def test_lifetime_expiry_bounces_deferred_mail(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink", domains=("fabrikam.test",))
    down_addr = sink_cfg.listeners[0].address  # nothing listens on contoso's hop
    cfg = node_config(
        "gateway",
        tmp_path / "gw",
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[
            {"domains": ["contoso.com"], "smart_hosts": [f"{down_addr}:1"], "tls": "none"},
        ],
        delivery={"lifetime": 1.0, "retry_intervals": [0.3]},
    )
    async with build_node(cfg) as gw:
        queue_id = await submit(gw, message("expires"))
        await wait_for(lambda: "bounced" in events(cfg, queue_id))
        evs = events(cfg, queue_id)
        assert evs.count("deferred") >= 1
        store = TraceStore(cfg.trace_db)
        bounced = [e for e in store.by_queue_id(queue_id) if e.event == "bounced"]
        store.close()
        assert "5.4.7" in bounced[0].detail
        assert bounced[0].status == "Failed"


async def test_delayed_mail_gets_one_delay_dsn_and_stays_queued(tmp_path: Path) -> None:
    """RFC 3464 `Action: delayed` once a message waited `delay_warning` (Postfix's
    delay_warning_time): one DSN however many retries follow, the message kept."""
    sink_cfg = sink_config(
        tmp_path / "sink", domains=("fabrikam.test",), recipients=["alice@fabrikam.test"]
    )
    down_addr = unique_loopback()  # nothing listens on contoso's hop
    async with build_node(sink_cfg) as sink:
        cfg = node_config(
            "gateway",
            tmp_path / "gw",
            domains=[{"domain": "contoso.com", "type": "internal_relay"}],
            routes=[
                {"domains": ["contoso.com"], "smart_hosts": [f"{down_addr}:25"], "tls": "none"},
                {"domains": ["fabrikam.test"], "smart_hosts": [f"{sink.address}:{sink.port}"],
                 "tls": "none"},
            ],
            delivery={"delay_warning": 0.5, "retry_intervals": [0.2], "connect_timeout": 0.5},
        )  # fmt: skip
        async with build_node(cfg) as gw:
            queue_id = await submit(gw, message("slow"))
            await wait_for(lambda: len(maildir_messages(sink_cfg, "alice@fabrikam.test")) == 1)
            await wait_for(lambda: events(cfg, queue_id).count("deferred") >= 5)
            assert len(maildir_messages(sink_cfg, "alice@fabrikam.test")) == 1  # only once
            assert queue_id in gw.spool.ids()
    dsn = maildir_messages(sink_cfg, "alice@fabrikam.test")[0]
    assert b"Subject: Delayed Mail (still being retried)" in dsn
    assert b"Action: delayed" in dsn and b"Will-Retry-Until: " in dsn
    assert b"Status: 4." in dsn and b"Final-Recipient: rfc822; bob@contoso.com" in dsn
