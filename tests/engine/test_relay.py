"""Gateway -> downstream sink over real loopback SMTP: relay path, relay control, limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mxflow.roles.build import build_node
from mxflow.roles.node import Node
from mxflow.store.trace import TraceStore
from tests.conftest import unique_loopback
from tests.engine.helpers import (
    RawSmtp,
    maildir_gateway,
    maildir_messages,
    message,
    node_config,
    sink_config,
    strip_received,
    stuffed,
    wait_for,
)


def gateway_config(tmp_path: Path, sink: Node, **kw: object) -> object:
    s = sink.servers[0]
    return node_config(
        "gateway",
        tmp_path / "gw",
        domains=[{"domain": "contoso.com", "type": "internal_relay", "recipients": "any"}],
        routes=[
            {
                "name": "to-sink",
                "domains": ["contoso.com", "fabrikam.test"],
                "smart_hosts": [f"{s.listener.address}:{s.port}"],
                "tls": "opportunistic",
            }
        ],
        **kw,  # type: ignore[arg-type]
    )


async def test_message_arrives_byte_identical_but_for_received(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    async with build_node(sink_cfg) as sink:
        cfg = gateway_config(tmp_path, sink)
        async with build_node(cfg) as gw:  # type: ignore[arg-type]
            raw = message(
                "identical",
                body=".leading dot\r\n..two dots\r\nutf-8 \u00e9\r\n\r\nlast line\r\n",
            )
            client = await RawSmtp.open(
                gw.servers[0].listener.address, gw.port, source=unique_loopback()
            )
            await client.cmd("EHLO client.fabrikam.test")
            code, text = await client.mail("alice@fabrikam.test", ["bob@contoso.com"], stuffed(raw))
            await client.close()
            assert code == 250, text
            assert "queued as" in text
            queue_id = text.rsplit(" ", 1)[1]
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
            got = maildir_messages(sink_cfg, "bob@contoso.com")[0]
            # sink's Received, then the gateway's, then exactly the bytes the client sent
            assert strip_received(got, 2) == raw
            gw_received = strip_received(got, 1)
            head = gw_received[: gw_received.index(b"\r\n\tfor")].decode()
            assert "from client.fabrikam.test" in head
            assert "by gateway.lab.test (mxflow) with ESMTP" in head
            assert f"id {queue_id}" in head
            assert b"for <bob@contoso.com>;" in gw_received
            await wait_for(
                lambda: any(
                    e.event == "delivered" for e in TraceStore(cfg.trace_db).by_queue_id(queue_id)
                )
            )


async def test_relay_denied_whatever_mail_from_claims(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    async with build_node(sink_cfg) as sink:
        cfg = gateway_config(tmp_path, sink)
        async with build_node(cfg) as gw:  # type: ignore[arg-type]
            client = await RawSmtp.open(gw.servers[0].listener.address, gw.port)
            await client.cmd("EHLO spammer.example")
            assert (await client.cmd("MAIL FROM:<ceo@contoso.com>"))[0] == 250
            code, text = await client.cmd("RCPT TO:<victim@elsewhere.example>")
            assert (code, text[:5]) == (550, "5.7.1")
            assert "Relay access denied" in text
            # an accepted domain still works in the same transaction
            assert (await client.cmd("RCPT TO:<bob@contoso.com>"))[0] == 250
            await client.close()


async def test_connector_allows_relay_for_its_network_only(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink", domains=("elsewhere.example",))
    async with build_node(sink_cfg) as sink:
        allowed = unique_loopback()
        s = sink.servers[0]
        cfg = node_config(
            "gateway",
            tmp_path / "gw",
            connectors=[{"name": "contoso-out", "from": [f"{allowed}/32"], "relay": True}],
            routes=[
                {"domains": ["*"], "smart_hosts": [f"{s.listener.address}:{s.port}"], "tls": "none"}
            ],
        )
        async with build_node(cfg) as gw:
            addr = gw.servers[0].listener.address
            client = await RawSmtp.open(addr, gw.port, source=allowed)
            await client.cmd("EHLO host.contoso.com")
            code, text = await client.mail(
                "bob@contoso.com", ["carol@elsewhere.example"], stuffed(message("out"))
            )
            assert code == 250, text
            await client.close()
            other = await RawSmtp.open(addr, gw.port, source=unique_loopback())
            await other.cmd("EHLO other.example")
            await other.cmd("MAIL FROM:<bob@contoso.com>")
            assert (await other.cmd("RCPT TO:<carol@elsewhere.example>"))[0] == 550
            await other.close()
            await wait_for(lambda: len(maildir_messages(sink_cfg, "carol@elsewhere.example")) == 1)


async def test_unknown_recipient_of_authoritative_domain(tmp_path: Path) -> None:
    cfg = node_config(
        "gateway",
        tmp_path / "gw",
        domains=[
            {
                "domain": "contoso.com",
                "type": "authoritative",
                "recipients": ["bob@contoso.com"],
            }
        ],
        routes=[{"domains": ["contoso.com"], "maildir": "mail"}],
    )
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.servers[0].listener.address, gw.port)
        await client.cmd("EHLO x.example")
        await client.cmd("MAIL FROM:<a@fabrikam.test>")
        code, text = await client.cmd("RCPT TO:<nobody@contoso.com>")
        assert (code, text[:5]) == (550, "5.1.1")
        assert (await client.cmd("RCPT TO:<BOB@contoso.com>"))[0] == 250
        await client.close()


async def test_too_many_recipients(tmp_path: Path) -> None:
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
        limits={"max_recipients": 3},
    )
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.servers[0].listener.address, gw.port)
        await client.cmd("EHLO x.example")
        await client.cmd("MAIL FROM:<a@fabrikam.test>")
        for i in range(3):
            assert (await client.cmd(f"RCPT TO:<u{i}@contoso.com>"))[0] == 250
        code, text = await client.cmd("RCPT TO:<u3@contoso.com>")
        assert (code, text[:5]) == (452, "4.5.3")
        assert (await client.cmd("DATA"))[0] == 354
        await client.send_raw(stuffed(message("three")))
        assert (await client.read_reply())[0] == 250
        await client.close()
        await wait_for((cfg.data_dir / "mail" / "u2@contoso.com" / "new").exists)


async def test_size_limit_at_mail_from_and_during_data(tmp_path: Path) -> None:
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
        limits={"max_message_size": 10_000},
    )
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.servers[0].listener.address, gw.port)
        code, text = await client.cmd("EHLO x.example")
        assert "SIZE 10000" in text
        code, text = await client.cmd("MAIL FROM:<a@fabrikam.test> SIZE=20000")
        assert (code, text[:5]) == (552, "5.3.4")
        # a client that lies (or says nothing) about the size is stopped during DATA
        big = message("big", body="x" * 70 + "\r\n") * 1 + b"y" * 50_000 + b"\r\n"
        code, text = await client.mail("a@fabrikam.test", ["bob@contoso.com"], stuffed(big))
        assert (code, text[:5]) == (552, "5.3.4")
        # the session is still in sync: the next message goes through
        code, text = await client.mail(
            "a@fabrikam.test", ["bob@contoso.com"], stuffed(message("small"))
        )
        assert code == 250, text
        await client.close()
        assert len(gw.spool.ids()) + len(TraceStore(cfg.trace_db).all()) >= 1


async def test_pipelined_transaction_and_extensions(tmp_path: Path) -> None:
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
    )
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.servers[0].listener.address, gw.port)
        code, text = await client.cmd("EHLO x.example")
        for ext in ("8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES", "SIZE"):
            assert ext in text
        assert "STARTTLS" not in text  # this listener has tls = "none"
        await client.send_raw(
            b"MAIL FROM:<a@fabrikam.test> BODY=8BITMIME\r\nRCPT TO:<x@contoso.com>\r\n"
            b"RCPT TO:<y@nowhere.example>\r\nDATA\r\n"
        )
        replies = [await client.read_reply() for _ in range(4)]
        assert [c for c, _ in replies] == [250, 250, 550, 354]
        await client.send_raw(stuffed(message("pipelined")) + b"QUIT\r\n")
        code, text = await client.read_reply()
        assert code == 250 and "queued as" in text
        assert (await client.read_reply())[0] == 221


async def test_trace_records_every_step(tmp_path: Path) -> None:
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
    )
    async with build_node(cfg) as gw:
        client = await RawSmtp.open(gw.servers[0].listener.address, gw.port)
        await client.cmd("EHLO x.example")
        raw = message("traced", message_id="<traced-1@fabrikam.test>")
        _code, text = await client.mail(
            "a@fabrikam.test", ["p@contoso.com", "q@contoso.com"], stuffed(raw)
        )
        await client.close()
        queue_id = text.rsplit(" ", 1)[1]
        store = TraceStore(cfg.trace_db)

        def events() -> list[tuple[str, str, str]]:
            return [
                (e.event, e.recipient, e.status)
                for e in store.by_message_id("traced-1@fabrikam.test")
            ]

        await wait_for(lambda: len(events()) == 4)
        assert sorted(events()) == [
            ("delivered", "p@contoso.com", "Delivered"),
            ("delivered", "q@contoso.com", "Delivered"),
            ("received", "p@contoso.com", "Pending"),
            ("received", "q@contoso.com", "Pending"),
        ]
        assert {e.queue_id for e in store.by_message_id("<traced-1@fabrikam.test>")} == {queue_id}
        store.close()
    await asyncio.sleep(0)


async def test_connections_per_ip_and_idle_timeout(tmp_path: Path) -> None:
    cfg = maildir_gateway(
        "gateway",
        tmp_path / "gw",
        maildir="mail",
        limits={"max_connections_per_ip": 2, "timeout": 0.5},
    )
    async with build_node(cfg) as gw:
        source = unique_loopback()
        first = await RawSmtp.open(gw.address, gw.port, source=source)
        second = await RawSmtp.open(gw.address, gw.port, source=source)
        reader, writer = await asyncio.open_connection(gw.address, gw.port, local_addr=(source, 0))
        line = await reader.readline()
        assert line.startswith(b"421 4.7.0")
        writer.close()
        # another address is not affected
        other = await RawSmtp.open(gw.address, gw.port, source=unique_loopback())
        assert (await other.cmd("NOOP"))[0] == 250
        # an idle session is closed after the timeout
        await asyncio.sleep(0.8)
        code, text = await first.read_reply()
        assert (code, text[:5]) == (421, "4.4.2")
        for c in (first, second, other):
            c.writer.close()
