"""Enhanced filtering over mxflow's own Received lines: sender -> relay(s) -> host, real SMTP.

The relays are real nodes on loopback; the host is a Maildir sink. The walk runs on what
the host stored, with the lab's private ranges (loopback counts as public) so the relays'
loopback addresses can be skip-listed.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from mxflow.config import EnhancedFiltering, NodeConfig
from mxflow.intake.skiplist import SKIP_LISTED, recover_sender
from mxflow.mail import header_section
from mxflow.roles.build import build_node
from mxflow.roles.node import Node
from tests.conftest import unique_loopback
from tests.engine.helpers import (
    RawSmtp,
    maildir_messages,
    message,
    node_config,
    sink_config,
    stuffed,
    wait_for,
)

LAB_PRIVATE = (ipaddress.ip_network("10.0.0.0/8"),)


def relay_to(name: str, data_dir: Path, target: Node) -> NodeConfig:
    s = target.servers[0]
    return node_config(
        name,
        data_dir,
        domains=[{"domain": "contoso.com", "type": "internal_relay"}],
        routes=[
            {"domains": ["contoso.com"], "smart_hosts": [f"{s.listener.address}:{s.port}"],
             "tls": "none"}
        ],
    )  # fmt: skip


async def send_through(first: Node, sender_ip: str, raw: bytes) -> None:
    client = await RawSmtp.open(first.servers[0].listener.address, first.port, source=sender_ip)
    await client.cmd("EHLO mail.fabrikam.test")
    code, text = await client.mail("alice@fabrikam.test", ["bob@contoso.com"], stuffed(raw))
    assert code == 250, text
    await client.close()


async def test_two_relays_are_skipped_and_a_forged_chain_is_ignored(tmp_path: Path) -> None:
    sender = unique_loopback()
    forged = (
        b"Received: from trusted.example (trusted.example [127.10.10.1])\r\n"
        b"\tby mx.fabrikam.test; Fri, 4 Dec 2026 09:00:00 +0000\r\n"
    )
    host_cfg = sink_config(tmp_path / "host")
    async with (
        build_node(host_cfg) as host,
        build_node(relay_to("archiver", tmp_path / "a", host)) as archiver,
        build_node(relay_to("edge", tmp_path / "e", archiver)) as edge,
    ):
        await send_through(edge, sender, forged + message("two hops"))
        await wait_for(lambda: len(maildir_messages(host_cfg, "bob@contoso.com")) == 1)
        archiver_ip = archiver.servers[0].listener.address
        edge_ip = edge.servers[0].listener.address
    [stored] = maildir_messages(host_cfg, "bob@contoso.com")
    skip = tuple(ipaddress.ip_network(ip) for ip in (archiver_ip, edge_ip, "127.10.10.1"))
    result = recover_sender(
        header_section(stored),
        client_ip=archiver_ip,
        client_helo="archiver.lab.test",
        settings=EnhancedFiltering(skip_ips=skip),
        private_ranges=LAB_PRIVATE,
        rcpt_tos=["bob@contoso.com"],
        own_hostname="sink.lab.test",
    )
    assert result.acted, result.reason
    assert (result.sender_ip, result.sender_helo) == (sender, "mail.fabrikam.test")
    assert result.skipped == (archiver_ip, edge_ip)
    assert dict(result.headers)[SKIP_LISTED] == f"ip=[{sender}];domain=mail.fabrikam.test"


async def test_skip_last_hop_through_one_relay(tmp_path: Path) -> None:
    sender = unique_loopback()
    host_cfg = sink_config(tmp_path / "host")
    async with (
        build_node(host_cfg) as host,
        build_node(relay_to("archiver", tmp_path / "a", host)) as archiver,
    ):
        await send_through(archiver, sender, message("one hop"))
        await wait_for(lambda: len(maildir_messages(host_cfg, "bob@contoso.com")) == 1)
        archiver_ip = archiver.servers[0].listener.address
    [stored] = maildir_messages(host_cfg, "bob@contoso.com")
    result = recover_sender(
        header_section(stored),
        client_ip=archiver_ip,
        client_helo="archiver.lab.test",
        settings=EnhancedFiltering(skip_last_hop=True),
        private_ranges=LAB_PRIVATE,
        rcpt_tos=["bob@contoso.com"],
        own_hostname="sink.lab.test",
    )
    assert result.sender_ip == sender and result.skipped == (archiver_ip,)
