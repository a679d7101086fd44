"""Test helpers for the host: a host node's TOML written to a file, as an admin would."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import unique_loopback

HOST_TOML = """\
[node]
name = "host"
hostname = "mailbox.contoso.test"
role = "host"

[[listeners]]
address = "{address}"
port = 0
tls = "none"

[[accepted_domains]]
domain = "contoso.com"
type = "authoritative"

[[mailboxes]]
address = "bob@contoso.com"
name = "Bob"

[[mailboxes]]
address = "alice@contoso.com"

[[aliases]]
address = "robert@contoso.com"
target = "bob@contoso.com"

[[groups]]
address = "team@contoso.com"
members = ["bob@contoso.com", "alice@contoso.com", "partner@fabrikam.test"]

[[routes]]
domains = ["contoso.com"]
maildir = "maildir"
"""


def write_host_toml(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "host.toml"
    path.write_text(HOST_TOML.format(address=unique_loopback()) + extra)
    return path
