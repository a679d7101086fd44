"""SIGHUP reloads the configuration without dropping connections, and a bad new config is
refused with the old one kept (as Postfix's `postfix reload`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from mxflow.config import load_config
from mxflow.roles.build import build_node
from tests.conftest import unique_loopback
from tests.engine.helpers import RawSmtp

CONFIG = """
[node]
name = "reloaded"
hostname = "reloaded.lab.test"

[[listeners]]
address = "{address}"
port = {port}
tls = "none"

[[accepted_domains]]
domain = "contoso.com"
type = "internal_relay"
{extra}
[[routes]]
domains = ["*"]
maildir = "maildir"
"""
FABRIKAM = '\n[[accepted_domains]]\ndomain = "fabrikam.com"\ntype = "internal_relay"\n'


def write(path: Path, address: str, port: int, extra: str = "") -> None:
    path.write_text(CONFIG.format(address=address, port=port, extra=extra))


async def rcpt_code(client: RawSmtp, rcpt: str) -> int:
    assert (await client.cmd("MAIL FROM:<a@example.org>"))[0] == 250
    code, _ = await client.cmd(f"RCPT TO:<{rcpt}>")
    await client.cmd("RSET")
    return code


async def test_reload_applies_to_new_connections_and_keeps_open_ones(tmp_path: Path) -> None:
    file, address = tmp_path / "node.toml", unique_loopback()
    write(file, address, 0)
    node = build_node(load_config(file, data_dir=tmp_path / "data"))
    async with node:
        port = node.port
        write(file, address, port)  # the bound port, so the listeners are unchanged
        before = await RawSmtp.open(address, port)
        await before.cmd("EHLO c.example.org")
        assert await rcpt_code(before, "bob@fabrikam.com") == 550
        write(file, address, port, FABRIKAM)
        assert node.reload()
        assert (await before.cmd("NOOP"))[0] == 250  # not dropped
        after = await RawSmtp.open(address, port)
        await after.cmd("EHLO c.example.org")
        assert await rcpt_code(after, "bob@fabrikam.com") == 250
        await before.close()
        await after.close()


async def test_a_bad_config_is_refused_and_the_old_one_stays(tmp_path: Path) -> None:
    file, address = tmp_path / "node.toml", unique_loopback()
    write(file, address, 0)
    node = build_node(load_config(file, data_dir=tmp_path / "data"))
    async with node:
        port = node.port
        file.write_text("[node\nname = broken")
        assert not node.reload()
        write(file, address, port + 1, FABRIKAM)  # valid, but moves the listener: refused
        assert not node.reload()
        client = await RawSmtp.open(address, port)
        await client.cmd("EHLO c.example.org")
        assert await rcpt_code(client, "bob@contoso.com") == 250
        assert await rcpt_code(client, "bob@fabrikam.com") == 550
        await client.close()


async def test_sighup_to_a_running_serve(tmp_path: Path) -> None:
    file, address = tmp_path / "node.toml", unique_loopback()
    port = 2525
    write(file, address, port)
    proc = subprocess.Popen(  # noqa: ASYNC220 - the daemon runs beside the test loop
        [
            sys.executable,
            "-m",
            "mxflow",
            "serve",
            "--config",
            str(file),
            "--data-dir",
            str(tmp_path / "d"),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        client = None
        for _ in range(100):
            try:
                client = await RawSmtp.open(address, port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        assert client is not None
        await client.cmd("EHLO c.example.org")
        assert await rcpt_code(client, "bob@fabrikam.com") == 550
        write(file, address, port, FABRIKAM)
        os.kill(proc.pid, signal.SIGHUP)
        await asyncio.sleep(1.0)
        assert proc.poll() is None  # SIGHUP once killed the daemon
        assert (await client.cmd("NOOP"))[0] == 250
        fresh = await RawSmtp.open(address, port)
        await fresh.cmd("EHLO c.example.org")
        assert await rcpt_code(fresh, "bob@fabrikam.com") == 250
        await client.close()
        await fresh.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert b"configuration reloaded" in err
