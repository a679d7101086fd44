"""`[[inbound_connectors]]`: who may send what, matched by IP/CIDR or certificate name."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from mxflow.config.base import IPNetwork, _Table
from mxflow.errors import ConfigError


@dataclass(frozen=True)
class InboundConnector:
    """Who may send what: clients matched by IP/CIDR and/or TLS certificate name.

    A client matching `relay = true` may send to any domain; others only to accepted ones.
    """

    name: str
    from_networks: tuple[IPNetwork, ...] = ()
    tls_cert_names: tuple[str, ...] = ()
    relay: bool = False
    require_tls: bool = False

    def matches(self, ip: str, cert_names: tuple[str, ...]) -> bool:
        if self.from_networks:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            if not any(addr in net for net in self.from_networks):
                return False
        if self.tls_cert_names and not any(
            _cert_name_matches(pattern, name)
            for pattern in self.tls_cert_names
            for name in cert_names
        ):
            return False
        return bool(self.from_networks or self.tls_cert_names)


def _cert_name_matches(pattern: str, name: str) -> bool:
    """A connector's certificate name against one the client presented: exact, or
    `*.contoso.com` for any name below contoso.com (as the reference's
    TlsSenderCertificateName takes it); a wildcard the client presents matches nothing."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if "*" in name:
        return False
    if pattern.startswith("*."):
        return name.endswith(pattern[1:]) and len(name) > len(pattern) - 1
    return pattern == name


def _connector(t: _Table, index: int) -> InboundConnector:
    name = t.text("name", f"connector{index}")
    nets: list[IPNetwork] = []
    for i, text in enumerate(t.texts("from")):
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            t.errors.add(ConfigError(t.file, f"{t.key('from')}[{i}]", text, "an IP or CIDR"))
    names = tuple(n.lower() for n in t.texts("tls_cert_names"))
    relay = t.flag("relay", False)
    require_tls = t.flag("require_tls", False)
    t.done()
    if not nets and not names and "from" not in t.data:
        raise t.error("from", None, "at least one of `from` (IPs/CIDRs) or `tls_cert_names`")
    return InboundConnector(name, tuple(nets), names, relay, require_tls)
