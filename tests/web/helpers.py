"""A gateway with a filter and a quarantine relaying to a sink, both real nodes on
loopback, and the admin UI served over it by uvicorn (for the web tests)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from mxflow.config import NodeConfig, load_config
from mxflow.roles.build import build_node
from mxflow.roles.node import Node
from mxflow.web.app import create_app
from tests.clirun import ROOT
from tests.conftest import free_port, unique_loopback
from tests.engine.helpers import RawSmtp, message, relay_gateway_toml, sink_config, stuffed

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n"
PASSWORD = "correct horse battery"


def gateway_toml(tmp_path: Path, sink: Node, *, secure: bool = True) -> Path:
    address = unique_loopback()
    path = tmp_path / "gateway.toml"
    path.write_text(
        relay_gateway_toml(
            "gateway",
            tmp_path / "gw",
            f"{sink.address}:{sink.port}",
            address=address,
            route_name="to-host",
            extra=f"""
[filter]
reject_action = "quarantine"

[web]
listen = "{address}:{free_port(address)}"
secure_cookies = {"true" if secure else "false"}
""",
        )
    )
    return path


async def add_user(config: Path, name: str, role: str, *domains: str) -> None:
    """`mxflow web user add` as an admin runs it, the password on standard input."""
    extra = [a for d in domains for a in ("--domain", d)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mxflow", "web", "--config", str(config),
        "user", "add", name, "--role", role, *extra,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(PASSWORD.encode() + b"\n"), 60)
    assert process.returncode == 0, err.decode()
    assert b"saved" in out


async def send(gw: Node, subject: str, mid: str, *, spam: bool = False) -> str:
    client = await RawSmtp.open(gw.address, gw.port, source="127.77.0.9")
    await client.cmd("EHLO client.fabrikam.test")
    raw = message(subject, message_id=mid, body=GTUBE if spam else "Hello Bob.\r\n")
    code, text = await client.mail("alice@fabrikam.test", ["bob@contoso.com"], stuffed(raw))
    await client.close()
    assert code == 250, text
    return text.split()[-1]


@dataclass
class Lab:
    sink_config: NodeConfig
    sink: Node
    config_file: Path
    config: NodeConfig
    gateway: Node
    url: str


@contextlib.asynccontextmanager
async def lab(tmp_path: Path, *, secure: bool = True) -> AsyncIterator[Lab]:
    """Sink and gateway running, the UI served at `Lab.url`."""
    sink_cfg = sink_config(tmp_path / "sink")
    async with build_node(sink_cfg) as sink:
        config_file = gateway_toml(tmp_path, sink, secure=secure)
        config = load_config(config_file)
        async with build_node(config) as gw:
            host, port = config.web.listen
            server = uvicorn.Server(
                uvicorn.Config(create_app(config), host=host, port=port, log_level="warning")
            )
            task = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.05)
                assert not task.done(), "uvicorn did not start"
            try:
                yield Lab(sink_cfg, sink, config_file, config, gw, f"http://{host}:{port}")
            finally:
                server.should_exit = True
                await asyncio.wait_for(task, 10)
