"""`mxflow queue drain`: a node leaves without losing mail.

The gateway is a real `mxflow serve` process and the drain a real `mxflow queue drain`;
the downstream sink runs in the test, started late when a test needs mail to wait in the
gateway's spool.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import pytest

from mxflow.queue.spool import DRAIN_REQUEST, request_drain
from mxflow.roles.build import build_node
from tests.clirun import mxflow
from tests.conftest import free_port, unique_loopback
from tests.engine.helpers import RawSmtp, maildir_messages, message, sink_config, stuffed, wait_for
from tests.engine.test_durability import _messages, gateway_toml, start_gateway, wait_listening

pytestmark = pytest.mark.slow


class Gateway:
    """A gateway process relaying contoso.com to `sink` (host:port), and its files."""

    def __init__(self, tmp_path: Path, sink: str, workers: int = 1) -> None:
        self.address = unique_loopback()
        self.port = free_port(self.address)
        self.config = tmp_path / "gateway.toml"
        self.config.write_text(gateway_toml(self.address, self.port, sink, workers))
        self.data_dir = tmp_path / "gw"
        self.queue = self.data_dir / "spool" / "queue"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> subprocess.Popen[bytes]:
        self.proc = start_gateway(self.config, self.data_dir)
        await wait_listening(self.address, self.port)
        return self.proc

    async def send(self, subject: str) -> str:
        """One message to bob@contoso.com; its Message-ID (asserts the 250)."""
        client = await RawSmtp.open(self.address, self.port)
        await client.cmd("EHLO mail.fabrikam.test")
        mid = f"<{subject}@fabrikam.test>"
        code, text = await client.mail(
            "alice@fabrikam.test", ["bob@contoso.com"], stuffed(message(subject, message_id=mid))
        )
        assert code == 250, text
        await client.close()
        return mid

    def drain(self, *args: str) -> asyncio.Task[tuple[int, str, str]]:
        where = ("--config", str(self.config), "--data-dir", str(self.data_dir))
        return asyncio.create_task(mxflow("queue", *where, "drain", *args))

    async def refuses(self) -> bool:
        try:
            _, writer = await asyncio.open_connection(self.address, self.port)
        except ConnectionRefusedError:
            return True
        writer.close()
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _ids(raws: list[bytes]) -> set[str]:
    found = set()
    for raw in raws:
        for line in raw.split(b"\r\n"):
            if line.startswith(b"Message-ID: "):
                found.add(line[12:].decode())
    return found


async def test_drain_closes_the_listener_finishes_the_session_delivers_and_exits_0(
    tmp_path: Path,
) -> None:
    sink_cfg = sink_config(tmp_path / "sink")  # down at first: mail waits in the spool
    listener = sink_cfg.listeners[0]
    gw = Gateway(tmp_path, f"{listener.address}:{listener.port}")
    proc = await gw.start()
    try:
        acked = {await gw.send(f"queued-{i}") for i in range(3)}
        assert len(_messages(gw.queue)) == 3
        session = await RawSmtp.open(gw.address, gw.port)  # in a transaction at the drain
        await session.cmd("EHLO mail.fabrikam.test")
        assert (await session.cmd("MAIL FROM:<alice@fabrikam.test>"))[0] == 250
        assert (await session.cmd("RCPT TO:<bob@contoso.com>"))[0] == 250
        drain = gw.drain("--timeout", "30")
        await wait_for(gw.refuses, within=10)  # new senders go to the next MX
        mid = "<in-progress@fabrikam.test>"
        assert (await session.cmd("DATA"))[0] == 354
        await session.send_raw(stuffed(message("in progress", message_id=mid)))
        assert (await session.read_reply())[0] == 250
        await session.close()
        await asyncio.sleep(1.0)
        assert proc.poll() is None, "exited with mail it could still deliver"
        assert not drain.done()
        async with build_node(sink_cfg):
            code, out, err = await drain
            assert code == 0, out + err
            assert proc.wait(timeout=15) == 0
        assert "0 message(s) left" in out
        assert _ids(maildir_messages(sink_cfg, "bob@contoso.com")) == acked | {mid}
        assert not _messages(gw.queue)
        assert not (gw.data_dir / "spool" / "control" / DRAIN_REQUEST).exists()
    finally:
        gw.stop()


async def test_drain_timeout_leaves_undelivered_mail_spooled_for_the_next_start(
    tmp_path: Path,
) -> None:
    sink_cfg = sink_config(tmp_path / "sink")  # never up during the drain
    listener = sink_cfg.listeners[0]
    gw = Gateway(tmp_path, f"{listener.address}:{listener.port}")
    proc = await gw.start()
    try:
        acked = {await gw.send(f"stuck-{i}") for i in range(2)}
        code, out, err = await gw.drain("--timeout", "1")
        assert code == 1, out + err  # the node left, but mail stayed behind: say so
        assert proc.wait(timeout=15) == 0
        assert "2 message(s) left" in out and "pending 1/1: bob@contoso.com" in out
        assert len(_messages(gw.queue)) == 2
        async with build_node(sink_cfg):  # the next start delivers them
            await gw.start()

            def delivered() -> bool:
                return _ids(maildir_messages(sink_cfg, "bob@contoso.com")) == acked

            await wait_for(delivered, within=30, interval=0.2)
            gw.stop()
        assert gw.proc is not None and gw.proc.returncode == 0
    finally:
        gw.stop()


async def test_a_drain_with_workers_ends_the_supervisor_without_restarts(tmp_path: Path) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    listener = sink_cfg.listeners[0]
    gw = Gateway(tmp_path, f"{listener.address}:{listener.port}", workers=2)
    async with build_node(sink_cfg):
        proc = await gw.start()
        try:
            acked = {await gw.send(f"workers-{i}") for i in range(6)}
            code, out, err = await gw.drain("--timeout", "20")
            assert code == 0, out + err
            assert proc.wait(timeout=15) == 0
            assert proc.stderr is not None
            assert b"restarting" not in proc.stderr.read()
        finally:
            gw.stop()
    assert _ids(maildir_messages(sink_cfg, "bob@contoso.com")) == acked
    assert not (gw.data_dir / "spool" / "control" / DRAIN_REQUEST).exists()


async def test_drain_of_a_stopped_node_exits_3_and_a_stale_request_is_dropped(
    tmp_path: Path,
) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    listener = sink_cfg.listeners[0]
    gw = Gateway(tmp_path, f"{listener.address}:{listener.port}")
    code, _, err = await mxflow("queue", "--data-dir", str(gw.data_dir), "drain")
    assert code == 3
    assert "no mxflow node is running" in err and "Traceback" not in err
    code, _, err = await mxflow("queue", "--spool", str(tmp_path / "x"), "drain")
    assert code == 2 and "--config FILE or --data-dir DIR" in err
    # a request left behind by a node that died before it drained is not carried out
    (gw.data_dir / "spool" / "control").mkdir(parents=True)
    request_drain(gw.data_dir / "spool", 0)
    proc = await gw.start()
    try:
        await asyncio.sleep(1.5)  # three polls of the control directory
        assert proc.poll() is None
        assert not await gw.refuses()
    finally:
        gw.stop()
    assert proc.returncode == 0
