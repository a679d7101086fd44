"""`[[routes]]`: recipient domains -> smart hosts, MX or Maildir, with a TLS policy."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from mxflow.config.base import SmartHost, TlsPolicy, _domain, _endpoint, _path, _Table


@dataclass(frozen=True)
class Route:
    """Recipient domains -> smart hosts (in order) or MX delivery, with a TLS policy."""

    name: str
    domains: tuple[str, ...]
    smart_hosts: tuple[SmartHost, ...] = ()
    mx: bool = False
    port: int = 25  # port used for MX delivery (25 on the Internet; the lab uses others)
    tls: TlsPolicy = "opportunistic"
    tls_name: str | None = None  # the name the certificate must carry (tls = "verify")
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    maildir: Path | None = None  # deliver locally into Maildirs under this directory

    def matches(self, domain: str) -> bool:
        domain = domain.lower()
        for pattern in self.domains:
            if pattern in ("*", domain):
                return True
            if pattern.startswith("*.") and domain.endswith(pattern[1:]):
                return True
        return False


def _route_domains(t: _Table) -> tuple[str, ...]:
    domains: list[str] = []
    for i, d in enumerate(t.texts("domains")):
        if d == "*":
            domains.append(d)
            continue
        bare = d[2:] if d.startswith("*.") else d
        with t.errors.section():
            checked = _domain(t, f"domains[{i}]", bare)
            domains.append(f"*.{checked}" if d.startswith("*.") else checked)
    if not domains and "domains" not in t.data:
        raise t.error("domains", None, 'a non-empty list of recipient domains ("*" for any)')
    return tuple(domains)


def _route(t: _Table, index: int, data_dir: Path) -> Route:
    name = t.text("name", f"route{index}")
    domains = _route_domains(t)
    hosts: list[SmartHost] = []
    for i, text in enumerate(t.texts("smart_hosts")):
        with t.errors.section():
            hosts.append(_endpoint(t, f"{t.key('smart_hosts')}[{i}]", text, 25))
    mx = t.flag("mx", False)
    port = t.integer("port", 25, minimum=1, maximum=65535)
    tls = t.choice("tls", ("none", "opportunistic", "required", "verify"), "opportunistic")
    tls_name = t.opt_text("tls_name")
    if tls_name is not None:
        tls_name = _domain(t, "tls_name", tls_name)
    ca_file = _path(data_dir, t.opt_text("ca_file"))
    client_cert = _path(data_dir, t.opt_text("client_cert"))
    client_key = _path(data_dir, t.opt_text("client_key"))
    maildir = _path(data_dir, t.opt_text("maildir"))
    t.done()
    if sum((bool(t.data.get("smart_hosts")), mx, maildir is not None)) != 1:
        raise t.error(
            "smart_hosts",
            [h.host for h in hosts],
            "exactly one of smart_hosts = [...], mx = true or maildir = PATH",
        )
    if tls == "verify" and not tls_name and hosts and not mx:
        for h in hosts:
            try:
                ipaddress.ip_address(h.host)
            except ValueError:
                continue
            raise t.error("tls_name", None, "the certificate name to verify for an IP smart host")
    return Route(
        name,
        domains,
        tuple(hosts),
        mx,
        port,
        tls,  # type: ignore[arg-type]
        tls_name,
        ca_file,
        client_cert,
        client_key,
        maildir,
    )
