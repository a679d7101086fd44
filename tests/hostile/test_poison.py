"""Attack 6: a poison message is held with its reason, never retried forever.

Twenty messages whose every delivery attempt raised (UnicodeEncodeError on an address)
once blocked all delivery. The addresses are now refused at intake (test_wire.py); a
message that still makes an attempt raise — here one planted in the spool with an
address that cannot be encoded — is tried a few times, then held, visible in the queue
and the trace, and the rest of the queue keeps moving.
"""

from __future__ import annotations

from pathlib import Path

from mxflow.queue.scheduler import MAX_LOCAL_FAILURES
from mxflow.roles.build import build_node
from tests.engine.helpers import maildir_messages, message, node_config, sink_config, wait_for


async def test_a_message_that_cannot_be_sent_is_held_and_the_queue_moves(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink", recipients=["bob@contoso.com"])
    async with build_node(sink_cfg) as sink:
        cfg = node_config(
            "gateway",
            tmp_path / "gw",
            domains=[{"domain": "contoso.com", "type": "internal_relay"}],
            routes=[
                {"domains": ["contoso.com"], "smart_hosts": [f"{sink.address}:{sink.port}"],
                 "tls": "none"}
            ],
            delivery={"retry_intervals": [0.3]},
        )  # fmt: skip
        async with build_node(cfg) as gw:
            poison = await gw.spool.enqueue(
                "a@fabrikam.test", ["b\udcffob@contoso.com"], message("poison")
            )
            gw.scheduler.submit(poison, message("poison"))
            good = await gw.spool.enqueue("a@fabrikam.test", ["bob@contoso.com"], message("ok"))
            gw.scheduler.submit(good, message("ok"))
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
            await wait_for(lambda: gw.spool.load_state(poison.queue_id).held is not None)
            held = gw.spool.load_state(poison.queue_id).held
            assert held is not None and f"{MAX_LOCAL_FAILURES} times" in held
            gw.trace.flush()
            events = [e.event for e in gw.trace.by_queue_id(poison.queue_id)]
            assert "held" in events
            assert poison.queue_id in gw.spool.ids()  # kept, for the administrator


async def test_an_attempt_that_raises_closes_its_connection() -> None:
    """Attack 6: each failing attempt once leaked its connection, until the next hop
    answered "too many connections" for everyone."""
    import asyncio

    import pytest

    from mxflow.smtp.client import ConnectionPool, Endpoint, send
    from tests.conftest import unique_loopback

    closed = asyncio.Event()

    async def next_hop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hop ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            writer.write(b"221 bye\r\n" if verb == b"QUIT" else b"250 ok\r\n")
        closed.set()
        writer.close()

    address = unique_loopback()
    server = await asyncio.start_server(next_hop, address, 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool(local_hostname="gw.test", source_address=None, connect_timeout=2)
    try:
        with pytest.raises(UnicodeEncodeError) as raised:
            await send(
                pool, Endpoint(address, port, tls="none"), "a@b.test", ["b\udcff@c.test"], b"x"
            )
        # the traceback stays referenced, as a logged exception's does: only an explicit
        # close ends the connection, not the garbage collector
        await asyncio.wait_for(closed.wait(), 5)  # the next hop saw the connection end
        assert raised.value is not None
    finally:
        pool.close()
        server.close()
