"""The mail-flow topology `mxflow dns plan` works from: one small TOML file.

It names the domain, the mailbox host (its inbound endpoint, SPF include, outbound pool,
DKIM selectors), and the third parties that may sit in the MX: the filtering `gateway`
(scenario 1) and the non-filtering `archiver` (scenario 2). See examples/topology.toml.
Unknown keys are errors: a misspelt key must not silently drop a record from the plan.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mxflow.dns.names import is_domain_name
from mxflow.errors import ConfigError, MxflowError

DMARC_STAGES = ("none", "quarantine", "reject")
MTA_STS_MODES = ("", "testing", "enforce")


@dataclass(frozen=True)
class DkimSelector:
    """A selector the domain publishes: a CNAME to the signer's key, or the key itself."""

    selector: str
    cname: str = ""
    txt: str = ""


@dataclass(frozen=True)
class ThirdParty:
    """A service in the MX: the filtering gateway or the archiver."""

    role: str
    name: str
    mx: tuple[str, ...]
    ips: tuple[str, ...]
    spf_include: str = ""
    outbound: bool = False

    @property
    def spf_terms(self) -> list[str]:
        """How SPF names this party as a sender: its include, else its addresses."""
        if self.spf_include:
            return [f"include:{self.spf_include}"]
        return [f"ip{ipaddress.ip_network(ip, strict=False).version}:{ip}" for ip in self.ips]


@dataclass(frozen=True)
class Host:
    """The hosted mailbox service."""

    name: str
    inbound: str
    inbound_ips: tuple[str, ...]
    spf_include: str
    outbound_ips: tuple[str, ...]
    dkim: tuple[DkimSelector, ...] = ()


@dataclass(frozen=True)
class Topology:
    """The whole mail flow of one domain."""

    domain: str
    host: Host
    gateway: ThirdParty | None = None
    archiver: ThirdParty | None = None
    verification: str = ""
    dmarc_rua: str = ""
    dmarc_stage: str = "none"
    tls_rpt_rua: str = ""
    mta_sts: str = ""
    mx_ttl: int = 3600
    source: str = "<topology>"
    extra: dict[str, Any] = field(default_factory=dict)

    def third_party(self, scenario: int) -> ThirdParty:
        """The party in the MX for `scenario` (1: gateway, 2: archiver)."""
        party = self.gateway if scenario == 1 else self.archiver
        if party is None:
            table = "gateway" if scenario == 1 else "archiver"
            raise MxflowError(f"{self.source}: scenario {scenario} needs a [{table}] table")
        return party


class _Table:
    """Typed access to one TOML table that names the key path in every error."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, path, data, "a table")
        self.data: dict[str, Any] = data
        self.path = path
        self.source = source
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def text(self, name: str, default: str | None = None) -> str:
        self.used.add(name)
        value = self.data.get(name, default)
        if not isinstance(value, str):
            expected = (
                "a string" if default is not None or name in self.data else "a string (required)"
            )
            raise ConfigError(self.source, self.key(name), value, expected)
        return value

    def integer(self, name: str, default: int) -> int:
        self.used.add(name)
        value = self.data.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(self.source, self.key(name), value, "a non-negative integer")
        return value

    def flag(self, name: str, default: bool) -> bool:
        self.used.add(name)
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.source, self.key(name), value, "true or false")
        return value

    def strings(self, name: str, *, required: bool = True) -> tuple[str, ...]:
        self.used.add(name)
        value = self.data.get(name, [] if not required else None)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(self.source, self.key(name), value, "a list of strings")
        if required and not value:
            raise ConfigError(self.source, self.key(name), value, "at least one entry")
        return tuple(value)

    def ips(self, name: str, *, required: bool = True) -> tuple[str, ...]:
        values = self.strings(name, required=required)
        for i, value in enumerate(values):
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ConfigError(
                    self.source, f"{self.key(name)}[{i}]", value, "an IP address or network"
                ) from None
        return values

    def table(self, name: str) -> _Table | None:
        self.used.add(name)
        if name not in self.data:
            return None
        return _Table(self.data[name], self.key(name), self.source)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(
                self.source, self.key(unknown[0]), self.data[unknown[0]], "no such key"
            )


def _third_party(table: _Table | None, role: str) -> ThirdParty | None:
    if table is None:
        return None
    party = ThirdParty(
        role=role,
        name=table.text("name", role),
        mx=tuple(h.rstrip(".") for h in table.strings("mx")),
        ips=table.ips("ips"),
        spf_include=table.text("spf_include", ""),
        outbound=table.flag("outbound", False),
    )
    table.done()
    return party


def parse_topology(data: dict[str, Any], source: str = "<topology>") -> Topology:
    """A `Topology` from parsed TOML; errors name the key and what is expected."""
    root = _Table(data, "", source)
    domain_table = root.table("domain")
    host_table = root.table("host")
    if domain_table is None:
        raise ConfigError(source, "domain", None, "a [domain] table with name = ...")
    if host_table is None:
        raise ConfigError(source, "host", None, "a [host] table (the mailbox host)")
    name = domain_table.text("name").strip().rstrip(".").lower()
    if not is_domain_name(name):  # every planned record is named after it
        raise ConfigError(source, "domain.name", name, "a domain name such as contoso.com")
    dmarc_stage = domain_table.text("dmarc_stage", "none")
    if dmarc_stage not in DMARC_STAGES:
        raise ConfigError(source, "domain.dmarc_stage", dmarc_stage, " or ".join(DMARC_STAGES))
    mta_sts = domain_table.text("mta_sts", "")
    if mta_sts not in MTA_STS_MODES:
        raise ConfigError(source, "domain.mta_sts", mta_sts, '"testing" or "enforce"')
    selectors = []
    host_table.used.add("dkim")
    for i, entry in enumerate(host_table.data.get("dkim", [])):
        dkim = _Table(entry, f"host.dkim[{i}]", source)
        selector = DkimSelector(dkim.text("selector"), dkim.text("cname", ""), dkim.text("txt", ""))
        if not selector.cname and not selector.txt:
            raise ConfigError(source, f"host.dkim[{i}]", entry, "a cname or a txt key record")
        dkim.done()
        selectors.append(selector)
    host = Host(
        name=host_table.text("name", "mailbox host"),
        inbound=host_table.text("inbound").rstrip("."),
        inbound_ips=host_table.ips("inbound_ips", required=False),
        spf_include=host_table.text("spf_include"),
        outbound_ips=host_table.ips("outbound_ips", required=False),
        dkim=tuple(selectors),
    )
    topology = Topology(
        domain=name,
        host=host,
        gateway=_third_party(root.table("gateway"), "gateway"),
        archiver=_third_party(root.table("archiver"), "archiver"),
        verification=domain_table.text("verification", ""),
        dmarc_rua=domain_table.text("dmarc_rua", ""),
        dmarc_stage=dmarc_stage,
        tls_rpt_rua=domain_table.text("tls_rpt_rua", ""),
        mta_sts=mta_sts,
        mx_ttl=domain_table.integer("mx_ttl", 3600),
        source=source,
    )
    domain_table.done()
    host_table.done()
    root.done()
    return topology


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology TOML file."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise MxflowError(f"{path}: cannot read topology: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MxflowError(f"{path}: not valid TOML: {exc}") from exc
    return parse_topology(data, str(path))
