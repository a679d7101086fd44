"""The admin web UI over a running lab (`mxflow lab run --keep`).

The lab's nodes share one trace store (nodes.py), so the UI of one node shows every hop
of a message. It serves the third party's node in scenario 1 (the gateway: its
quarantine holds what it filtered) and the host's otherwise, on loopback over plain HTTP
(so its cookies are not marked Secure), with one administrator whose password is made
for this run and printed once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets

import uvicorn

from mxflow.config import NodeConfig
from mxflow.web.accounts import Accounts
from mxflow.web.app import create_app

ADMIN = "admin"


@dataclasses.dataclass
class LabUi:
    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str
    password: str

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 10)


async def serve_ui(config: NodeConfig, listen: tuple[str, int]) -> LabUi:
    """Start the UI of `config`'s node on `listen` in this event loop."""
    web = dataclasses.replace(
        config.web,
        listen=listen,
        secure_cookies=False,
        users_db=config.data_dir / "web.sqlite",
        public_url=f"http://{listen[0]}:{listen[1]}",
    )
    config = dataclasses.replace(config, web=web)
    password = secrets.token_urlsafe(12)
    accounts = Accounts(web.users_db or config.data_dir / "web.sqlite")
    await asyncio.to_thread(accounts.add_user, ADMIN, password, "admin", [])
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=listen[0],
            port=listen[1],
            log_level="warning",
            access_log=False,
            server_header=False,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # raises why it could not start (say, the port is taken)
            raise RuntimeError(f"the lab UI did not start on {listen[0]}:{listen[1]}")
        await asyncio.sleep(0.05)
    return LabUi(server, task, f"http://{listen[0]}:{listen[1]}/", password)
