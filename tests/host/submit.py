"""Test helpers for submission: a host with a submission listener, a client that logs in."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

from mxflow.auth.keys import generate_key
from mxflow.config import NodeConfig, parse_config
from mxflow.store.directory import open_directory
from tests.engine.helpers import RawSmtp

PASSWORD = "correct horse battery staple"
SELECTOR = "s1"


def dkim_key(data_dir: Path) -> str:
    """contoso.com's DKIM key for the host in `data_dir` (made once); its DNS record."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "contoso.pem").exists():
        pem, record = generate_key("rsa", 1024)
        (data_dir / "contoso.pem").write_bytes(pem)
        (data_dir / "dkim.txt").write_text(record)
    return (data_dir / "dkim.txt").read_text()


def submission_host(
    data_dir: Path, address: str, *, routes: list[dict[str, Any]], **tables: Any
) -> NodeConfig:
    """A host for contoso.com: a submission listener (STARTTLS) on `address`, bob and alice
    with a password, robert@ an alias of bob, DKIM signing for contoso.com."""
    dkim_key(data_dir)
    data: dict[str, Any] = {
        "node": {"name": "host", "hostname": "mailbox.contoso.test", "role": "host"},
        "listeners": [
            {
                "address": address,
                "port": 0,
                "tls": "starttls",
                "cert": "tls/host.crt",
                "key": "tls/host.key",
                "generate_cert": True,
                "submission": True,
            }
        ],
        "host": {"lock_down": True},
        "accepted_domains": [{"domain": "contoso.com"}],
        "mailboxes": [{"address": "bob@contoso.com"}, {"address": "alice@contoso.com"}],
        "aliases": [{"address": "robert@contoso.com", "target": "bob@contoso.com"}],
        "routes": [{"domains": ["contoso.com"], "maildir": "maildir"}, *routes],
        "delivery": {"source_address": address, "retry_intervals": [0.3], "connect_timeout": 2},
        "auth": {
            "authserv_id": "mailbox.contoso.test",
            "dkim_sign": {
                "contoso.com": {"selector": SELECTOR, "key_file": str(data_dir / "contoso.pem")}
            },
        },
        **tables,
    }
    cfg = parse_config(data, "<host>", data_dir=data_dir)
    with open_directory(cfg) as directory:
        directory.set_password("bob@contoso.com", PASSWORD)
        directory.set_password("alice@contoso.com", "alice's own")
    return cfg


def contoso_zone(host_ip: str, dkim: str) -> str:
    """contoso.com as scenario 1 publishes it: SPF names the host, DMARC p=reject, DKIM."""
    chunks = " ".join(f'"{dkim[i : i + 200]}"' for i in range(0, len(dkim), 200))
    return (
        "$ORIGIN contoso.com.\n$TTL 300\n"
        "@ IN SOA ns.contoso.com. admin.contoso.com. 1 3600 600 86400 300\n"
        f'@ IN TXT "v=spf1 ip4:{host_ip} -all"\n'
        '_dmarc IN TXT "v=DMARC1; p=reject"\n'
        f"{SELECTOR}._domainkey IN TXT {chunks}\n"
    )


async def starttls(client: RawSmtp) -> None:
    """STARTTLS on a RawSmtp (the host's certificate is self-signed: not verified here)."""
    code, text = await client.cmd("STARTTLS")
    assert code == 220, text
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    await client.writer.start_tls(context)


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


async def login(
    address: str, port: int, user: str, password: str, *, source: str | None = None
) -> tuple[RawSmtp, int, str]:
    """A client connected, under TLS, after AUTH PLAIN: (client, code, text)."""
    client = await RawSmtp.open(address, port, source=source)
    await client.cmd("EHLO laptop.contoso.com")
    await starttls(client)
    code, text = await client.cmd("EHLO laptop.contoso.com")
    assert code == 250 and "AUTH PLAIN LOGIN" in text, text
    code, text = await client.cmd(f"AUTH PLAIN {plain(user, password)}")
    return client, code, text


def letter(sender: str, rcpt: str, subject: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@contoso.com>\r\n"
        "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nHello from the host.\r\n"
    ).encode()
