"""`mxflow lab run --keep` leaves the topology running with the admin web UI over it:
one trace store for every lab node, and an administrator who can log in."""

from __future__ import annotations

from pathlib import Path

import httpx

from mxflow.lab.run import default_topology
from mxflow.lab.scenario import topology
from mxflow.lab.ui import ADMIN, serve_ui
from mxflow.lab.world import World
from mxflow.records.topology import load_topology
from mxflow.roles.node import Node
from tests.conftest import free_port, unique_loopback


async def test_the_kept_lab_serves_the_web_ui(tmp_path: Path) -> None:
    world = World(load_topology(default_topology()))
    async with topology(world, "1", tmp_path / "kept") as env:
        gateway, host = env["party"], env["host"]
        assert isinstance(gateway, Node) and isinstance(host, Node)
        assert gateway.config.trace_db == host.config.trace_db  # one trace for the lab
        address = unique_loopback()
        ui = await serve_ui(gateway.config, (address, free_port(address)))
        try:
            async with httpx.AsyncClient(base_url=ui.url) as client:
                page = await client.get("/login")
                assert page.status_code == 200
                token = page.text.split('name="login_token" value="', 1)[1].split('"', 1)[0]
                login = await client.post(
                    "/login",
                    data={"username": ADMIN, "password": ui.password, "login_token": token},
                )
                assert login.status_code in (200, 303), login.text[:300]
                dashboard = await client.get("/")
                assert dashboard.status_code == 200 and "Dashboard" in dashboard.text
        finally:
            await ui.stop()
