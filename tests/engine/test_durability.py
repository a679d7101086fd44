"""kill -9 in the middle of a burst loses no acknowledged message; a restart delivers them.

The gateway runs as a real `mxflow serve` process; the downstream sink runs in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mxflow.queue.spool import owner_of
from mxflow.roles.build import build_node
from tests.conftest import free_port, unique_loopback
from tests.engine.helpers import RawSmtp, maildir_messages, message, sink_config, stuffed, wait_for

pytestmark = pytest.mark.slow


def gateway_toml(address: str, port: int, sink: str, workers: int = 1) -> str:
    return f"""
[node]
name = "gateway"
hostname = "gateway.lab.test"

[server]
workers = {workers}

[[listeners]]
address = "{address}"
port = {port}
tls = "none"

[[accepted_domains]]
domain = "contoso.com"
type = "internal_relay"

[[routes]]
domains = ["contoso.com"]
smart_hosts = ["{sink}"]
tls = "none"

[delivery]
source_address = "{address}"
retry_intervals = ["0.5s"]
connect_timeout = "2s"
"""


def start_gateway(config: Path, data_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mxflow",
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def wait_listening(address: str, port: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection(address, port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def burst(address: str, port: int, n: int, acked: list[str], clients: int = 8) -> None:
    """Send n messages from `clients` concurrent senders, one connection per message (as
    smtp-source does); record the Message-IDs that got a 250."""
    counter = iter(range(n))

    async def one_client() -> None:
        for i in counter:
            try:
                client = await RawSmtp.open(address, port)
                await client.cmd("EHLO burst.fabrikam.test")
                mid = f"<burst-{i}@fabrikam.test>"
                raw = message(f"burst {i}", message_id=mid, body="x" * 2000 + "\r\n")
                code, _ = await client.mail(
                    "alice@fabrikam.test", ["bob@contoso.com"], stuffed(raw)
                )
                if code == 250:
                    acked.append(mid)
                await client.close()
            except (OSError, TimeoutError, AssertionError):
                return  # the gateway was killed

    await asyncio.gather(*(one_client() for _ in range(clients)))


def _messages(queue_dir: Path) -> list[Path]:
    """Spooled messages (not the empty files the spool preallocates)."""
    found = []
    for p in queue_dir.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if p.stat().st_size > 0:
                found.append(p)
    return found


def _owners(queue_dir: Path, workers: int) -> set[int]:
    return {owner_of(p.name, workers) for p in _messages(queue_dir)}


@pytest.mark.parametrize("workers", [1, 2])
async def test_kill_9_mid_burst_loses_no_acknowledged_message(tmp_path: Path, workers: int) -> None:
    # The sink is down during the burst, so every acknowledged message must still be in
    # the gateway's spool when it is killed; the restart (with the sink up) delivers them.
    sink_cfg = sink_config(tmp_path / "sink")
    sink_addr = f"{sink_cfg.listeners[0].address}:{sink_cfg.listeners[0].port}"
    address = unique_loopback()
    port = free_port(address)
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_toml(address, port, sink_addr, workers))
    proc = start_gateway(config, tmp_path / "gw")
    try:
        await wait_listening(address, port)
        acked: list[str] = []
        sender = asyncio.create_task(burst(address, port, 3000, acked))
        queue_dir = tmp_path / "gw" / "spool" / "queue"
        # kill once 60 are acknowledged and every worker has taken some (they start apart)
        await wait_for(
            lambda: len(acked) >= 60 and _owners(queue_dir, workers) == set(range(workers)),
            within=60,
        )
        if workers > 1:  # kill every process: the supervisor and its workers
            for pid in _children(proc.pid):
                os.kill(pid, signal.SIGKILL)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        await sender
        assert len(acked) < 3000, "the kill came too late to test anything"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    files = _messages(tmp_path / "gw" / "spool" / "queue")
    assert set(acked) <= {_message_id(p.read_bytes()) for p in files}
    # with two workers on one port (SO_REUSEPORT), both took connections
    assert _owners(tmp_path / "gw" / "spool" / "queue", workers) == set(range(workers))

    async with build_node(sink_cfg):
        proc2 = start_gateway(config, tmp_path / "gw")
        try:
            await wait_listening(address, port)

            def delivered() -> set[str]:
                return {_message_id(raw) for raw in maildir_messages(sink_cfg, "bob@contoso.com")}

            await wait_for(lambda: set(acked) <= delivered(), within=60, interval=0.2)
            gw_spool = tmp_path / "gw" / "spool" / "queue"
            await wait_for(lambda: not _messages(gw_spool), within=30)
        finally:
            proc2.send_signal(signal.SIGTERM)
            try:
                proc2.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc2.kill()
                raise
        assert proc2.returncode == 0


def _message_id(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        if line.startswith(b"Message-ID: "):
            return line[12:].decode()
    return ""


def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        return _children_proc(pid)
    return [int(x) for x in out.split()]


def _children_proc(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
    return kids


async def test_supervisor_restarts_a_killed_worker_which_recovers_its_mail(
    tmp_path: Path,
) -> None:
    sink_cfg = sink_config(tmp_path / "sink")
    sink_addr = f"{sink_cfg.listeners[0].address}:{sink_cfg.listeners[0].port}"
    address = unique_loopback()
    port = free_port(address)
    config = tmp_path / "gateway.toml"
    config.write_text(gateway_toml(address, port, sink_addr, workers=2))
    proc = start_gateway(config, tmp_path / "gw")
    queue_dir = tmp_path / "gw" / "spool" / "queue"
    try:
        await wait_listening(address, port)
        acked: list[str] = []
        await wait_for(lambda: len(_children(proc.pid)) == 2, within=30)
        async with asyncio.timeout(30):
            while _owners(queue_dir, 2) != {0, 1}:  # both workers hold mail (sink is down)
                await burst(address, port, 20, acked)
        first = set(_children(proc.pid))
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: len(set(_children(proc.pid)) - first) == 1, within=30)
        async with build_node(sink_cfg):

            def delivered() -> set[str]:
                return {_message_id(r) for r in maildir_messages(sink_cfg, "bob@contoso.com")}

            await wait_for(lambda: set(acked) <= delivered(), within=60, interval=0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
