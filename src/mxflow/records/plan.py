"""The records a domain must publish for its mail flow (`mxflow dns plan`).

From a `Topology` and a scenario this derives: the MX to the third party, SPF naming only
the real senders as the domain (the host's include; the third party only when outbound
mail passes it), the host's domain-verification TXT, the DKIM selector records, DMARC at
its current stage, and optionally MTA-STS and TLS-RPT. The plan renders as a zone-file
fragment (which `parse_zone` and the embedded server load as is) and as a table.

`lab_zones()` gives what the *other* parties publish in the lab (gateway and archiver MX
hosts, the host's inbound endpoint and SPF include, the DKIM key targets), so the lab's
DNS answers for every name the plan refers to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mxflow.dns.zone import Zone, parse_zone
from mxflow.errors import MxflowError
from mxflow.records.topology import ThirdParty, Topology

CUTOVER_TTL = 3600
# RFC 8461 max_age: a day while testing (a mistake expires quickly), then the weeks the
# RFC recommends once enforced.
MTA_STS_MAX_AGE = {"testing": 86400, "enforce": 1209600}
POLICY_TTL = 3600
# RFC 8463 §A.2's example ed25519 public key: the lab's stand-in at DKIM CNAME targets.
LAB_DKIM_KEY = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


@dataclass(frozen=True)
class PlannedRecord:
    """One record to publish: owner, type, presentation value, TTL and why it is there."""

    name: str
    rdtype: str
    value: str
    ttl: int
    purpose: str

    def zone_line(self, origin: str) -> str:
        owner = self.name
        if owner == origin:
            owner = "@"
        elif owner.endswith("." + origin):
            owner = owner[: -len(origin) - 1]
        return f"{owner:<32} {self.ttl:>5} IN {self.rdtype:<5} {self.value}"


@dataclass
class Plan:
    """The records for one domain and scenario, plus the advice that goes with them."""

    domain: str
    scenario: int
    third_party: str
    records: list[PlannedRecord] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def add(self, name: str, rdtype: str, value: str, purpose: str, ttl: int = POLICY_TTL) -> None:
        self.records.append(PlannedRecord(name, rdtype, value, ttl, purpose))

    def zone_fragment(self) -> str:
        """The records as an RFC 1035 zone-file fragment with `$ORIGIN`."""
        lines = [
            f"; mxflow dns plan: {self.domain}, scenario {self.scenario} "
            f"(MX -> {self.third_party})",
            *[f"; {line}" for line in self.advice],
            f"$ORIGIN {self.domain}.",
            f"$TTL {POLICY_TTL}",
        ]
        lines += [f"; {r.purpose}\n{r.zone_line(self.domain)}" for r in self.records]
        return "\n".join(lines) + "\n"

    def table(self) -> str:
        """The records as a readable table, then the advice."""
        rows = [("NAME", "TYPE", "TTL", "VALUE", "WHY")]
        rows += [(r.name, r.rdtype, str(r.ttl), r.value, r.purpose) for r in self.records]
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        out = [
            "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row))
            for row in rows
        ]
        out.append("")
        out += [f"- {line}" for line in self.advice]
        return "\n".join(out) + "\n"

    def zone(self) -> Zone:
        """The fragment as a `Zone` (what the embedded server loads)."""
        return parse_zone(self.zone_fragment(), filename=f"<plan {self.domain}>")


def quote_txt(text: str) -> str:
    """A TXT value in zone-file syntax, split into quoted strings of at most 255 bytes."""
    data = text.encode()
    pieces = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    quoted = []
    for piece in pieces:
        escaped = piece.decode().replace("\\", "\\\\").replace('"', '\\"')
        quoted.append(f'"{escaped}"')
    return " ".join(quoted)


def spf_record(topology: Topology, scenario: int) -> str:
    """The domain's SPF: the host's include, plus the third party if outbound passes it."""
    terms = ["v=spf1", f"include:{topology.host.spf_include}"]
    party = topology.third_party(scenario)
    if party.outbound:
        terms += party.spf_terms
    terms.append("-all")
    return " ".join(terms)


def dmarc_record(topology: Topology) -> str:
    record = f"v=DMARC1; p={topology.dmarc_stage}"
    if topology.dmarc_rua:
        record += f"; rua={topology.dmarc_rua}"
    return record


def plan_records(topology: Topology, scenario: int) -> Plan:
    """The plan for `scenario` (1: MX to the filtering gateway; 2: MX to the archiver)."""
    if scenario not in (1, 2):
        raise MxflowError(f"scenario must be 1 or 2, not {scenario}")
    party = topology.third_party(scenario)
    domain = topology.domain
    plan = Plan(domain, scenario, party.name)
    _plan_mx(plan, topology, party)
    senders = "the host" + (f" and the {party.role}" if party.outbound else "")
    plan.add(
        domain, "TXT", quote_txt(spf_record(topology, scenario)), f"SPF: {senders} send as {domain}"
    )
    if topology.verification:
        plan.add(domain, "TXT", quote_txt(topology.verification), "the host's domain verification")
    _plan_dkim(plan, topology)
    plan.add(
        f"_dmarc.{domain}",
        "TXT",
        quote_txt(dmarc_record(topology)),
        f"DMARC, stage p={topology.dmarc_stage}",
    )
    if topology.mta_sts:
        _plan_mta_sts(plan, topology, party)
    if topology.tls_rpt_rua:
        plan.add(
            f"_smtp._tls.{domain}",
            "TXT",
            quote_txt(f"v=TLSRPTv1; rua={topology.tls_rpt_rua}"),
            "TLS reporting (RFC 8460)",
        )
    _plan_cutover_advice(plan, topology, party)
    return plan


def _plan_mx(plan: Plan, topology: Topology, party: ThirdParty) -> None:
    """MX records to the third party's hosts, in order, at a TTL short enough for the
    cut-over (and for a quick rollback)."""
    for preference, host in enumerate(party.mx, start=1):
        plan.add(
            topology.domain,
            "MX",
            f"{preference * 10} {host}.",
            f"inbound mail goes to the {party.role} ({party.name})",
            ttl=min(topology.mx_ttl, CUTOVER_TTL) if topology.mx_ttl else CUTOVER_TTL,
        )


def _plan_dkim(plan: Plan, topology: Topology) -> None:
    """One record per host DKIM selector: a CNAME to the host's key, or the key itself."""
    for selector in topology.host.dkim:
        owner = f"{selector.selector}._domainkey.{topology.domain}"
        if selector.cname:
            plan.add(
                owner, "CNAME", f"{selector.cname.rstrip('.')}.", "DKIM key of the host's signer"
            )
        else:
            plan.add(owner, "TXT", quote_txt(selector.txt), "DKIM public key")


def _plan_mta_sts(plan: Plan, topology: Topology, party: ThirdParty) -> None:
    """The MTA-STS TXT record, whose id changes with the policy, and advice on the policy
    file it announces (which DNS alone cannot publish)."""
    domain = topology.domain
    policy = f"{topology.mta_sts}:{','.join(party.mx)}"
    policy_id = hashlib.sha256(policy.encode()).hexdigest()[:16]
    plan.add(
        f"_mta-sts.{domain}", "TXT", quote_txt(f"v=STSv1; id={policy_id}"), "MTA-STS (RFC 8461)"
    )
    max_age = MTA_STS_MAX_AGE[topology.mta_sts]
    plan.advice.append(
        f"MTA-STS: publish the web host mta-sts.{domain} (A/AAAA or CNAME, with a "
        f"certificate valid for that name) serving https://mta-sts.{domain}/.well-known/"
        f"mta-sts.txt with 'version: STSv1', 'mode: {topology.mta_sts}', "
        + ", ".join(f"'mx: {h}'" for h in party.mx)
        + f", 'max_age: {max_age}' (RFC 8461 §3.2: all four are required); change the id "
        "whenever the policy changes"
    )


def _plan_cutover_advice(plan: Plan, topology: Topology, party: ThirdParty) -> None:
    """Put the steps of a safe cut-over ahead of the other advice: TTL first, then locking
    the host to the third party, then (for the archiver) filtering, then DMARC."""
    plan.advice[:0] = [
        f"Before the cut-over: lower the current MX TTL to {CUTOVER_TTL} s or less (300 s is "
        "common) and wait one old TTL, so a rollback is quick; raise it again once settled.",
        f"Lock the host down: accept internet mail for {topology.domain} only through the "
        f"connector from the {party.role} ({', '.join(party.ips)}), or senders bypass it by "
        f"connecting to {topology.host.inbound} directly.",
        "DMARC: start at p=none with rua and read the reports; when all legitimate mail "
        "passes aligned, move to p=quarantine, then to p=reject.",
    ]
    if plan.scenario == 2:
        plan.advice.insert(
            2,
            "The archiver does not filter: enable Enhanced Filtering for Connectors on the "
            f"host, skipping the archiver's IPs ({', '.join(party.ips)}), so SPF, DMARC and "
            "IP reputation see the original sender.",
        )


def lab_zones(topology: Topology) -> list[Zone]:
    """Zones for the names the plan refers to that other parties publish (lab only)."""
    records: dict[str, list[tuple[str, str, str]]] = {}

    def add(name: str, rdtype: str, value: str) -> None:
        origin = name.split(".", 1)[1] if name.count(".") > 1 else name
        records.setdefault(origin, []).append((f"{name}.", rdtype, value))

    for party in (topology.gateway, topology.archiver):
        if party is None:
            continue
        for host in party.mx:
            for ip in party.ips:
                if "/" not in ip:
                    add(host, "AAAA" if ":" in ip else "A", ip)
    for ip in topology.host.inbound_ips:
        add(topology.host.inbound, "AAAA" if ":" in ip else "A", ip)
    pool = " ".join(f"ip{6 if ':' in ip else 4}:{ip}" for ip in topology.host.outbound_ips)
    add(topology.host.spf_include, "TXT", quote_txt(f"v=spf1 {pool} -all".replace("  ", " ")))
    for selector in topology.host.dkim:
        if selector.cname:
            add(selector.cname.rstrip("."), "TXT", quote_txt(LAB_DKIM_KEY))
    zones: dict[str, Zone] = {}
    for origin, entries in records.items():
        # keep names that share a parent together: one zone per origin suffices
        zones.setdefault(origin, Zone.from_records(origin, []))
        for name, rdtype, value in entries:
            zones[origin].add(name, rdtype, value)
    return list(zones.values())


def zone_text(zone: Zone) -> str:
    """A `Zone` as zone-file text (for `--zone-dir`)."""
    lines = [f"$ORIGIN {zone.origin}"]
    for owner, node in sorted(zone.records.items()):
        for rdataset in node.values():
            for rdata in rdataset:
                lines.append(f"{owner} {rdataset.ttl} IN {rdataset.rdtype.name} {rdata.to_text()}")
    return "\n".join(lines) + "\n"
