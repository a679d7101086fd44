"""`mxflow queue list|show|retry|delete` against the spool of a running node."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mxflow.roles.build import build_node
from mxflow.store.trace import TraceStore
from tests.clirun import mxflow
from tests.engine.helpers import (
    RawSmtp,
    gateway_config,
    maildir_messages,
    message,
    node_config,
    sink_config,
    stuffed,
    wait_for,
)


async def test_queue_commands_on_a_running_node(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    down = f"{sink_cfg.listeners[0].address}:{sink_cfg.listeners[0].port}"
    cfg = node_config(
        "gateway",
        tmp_path / "gw",
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[{"domains": ["contoso.com"], "smart_hosts": [down], "tls": "none"}],
        delivery={"retry_intervals": ["1h"]},
    )
    spool = str(cfg.spool_dir)
    async with build_node(cfg) as gw:
        ids = []
        for subject in ("first", "second"):
            client = await RawSmtp.open(gw.address, gw.port)
            await client.cmd("EHLO c.fabrikam.test")
            code, text = await client.mail(
                "alice@fabrikam.test", ["bob@contoso.com"], stuffed(message(subject))
            )
            await client.close()
            assert code == 250
            ids.append(text.rsplit(" ", 1)[1])
        await wait_for(lambda: all(gw.spool.load_state(q).attempts == 1 for q in ids))

        code, out, err = await mxflow("queue", "--spool", spool, "list")
        assert code == 0, err
        assert all(q in out for q in ids) and "2 message(s)" in out
        assert "pending 1/1: bob@contoso.com" in out

        code, out, err = await mxflow("queue", "--spool", spool, "show", ids[0])
        assert code == 0, err
        assert f"Queue-ID: {ids[0]}" in out
        assert "Recipient: <bob@contoso.com> deferred" in out
        assert "Subject: first" in out

        async with build_node(sink_cfg):
            code, out, _ = await mxflow("queue", "--spool", spool, "retry", ids[0])
            assert code == 0 and "retry requested" in out
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
            await wait_for(lambda: not gw.spool.exists(ids[0]))
            assert gw.spool.exists(ids[1])  # not retried: its next attempt is in an hour

            code, out, _ = await mxflow("queue", "--spool", spool, "delete", ids[1])
            assert code == 0
            await wait_for(lambda: not gw.spool.exists(ids[1]))
        assert len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1

    code, out, err = await mxflow("queue", "--spool", spool, "show", ids[1])
    assert code == 2 and f"no message {ids[1]}" in err and "Traceback" not in err
    store = TraceStore(cfg.trace_db)
    assert [e.event for e in store.by_queue_id(ids[1])][-1] == "deleted"
    store.close()


async def test_another_process_injects_into_a_running_node(tmp_path: Path) -> None:
    """What quarantine release does: Spool.inject from a separate process, no re-filtering."""
    sink_cfg = sink_config(tmp_path / "sink")
    async with build_node(sink_cfg) as sink:
        cfg = gateway_config(
            tmp_path / "gw", sink.address, sink.port, tls="none", domains=["contoso.com"]
        )
        async with build_node(cfg):
            code = (
                "import asyncio\n"
                "from mxflow.queue.spool import Spool\n"
                f"spool = Spool({str(cfg.spool_dir)!r})\n"
                "env = asyncio.run(spool.inject('alice@fabrikam.test', ['bob@contoso.com'],"
                " b'Subject: released\\r\\n\\r\\nfrom quarantine\\r\\n',"
                " message_id='<rel-1@fabrikam.test>'))\n"
                "spool.close()\n"
                "print(env.queue_id)\n"
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0
            await wait_for(lambda: len(maildir_messages(sink_cfg, "bob@contoso.com")) == 1)
            got = maildir_messages(sink_cfg, "bob@contoso.com")[0]
            assert got.endswith(b"Subject: released\r\n\r\nfrom quarantine\r\n")
            queue_id = out.decode().strip()
            store = TraceStore(cfg.trace_db)
            await wait_for(lambda: any(e.event == "delivered" for e in store.by_queue_id(queue_id)))
            store.close()
