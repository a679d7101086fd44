"""Check a live domain's mail-flow DNS (`mxflow dns check`).

Resolves what the domain publishes and says what it means for the mail flow: where the
MX points (a known filtering service, the mailbox host directly, an archiver, something
else) and therefore which scenario this is; whether the host's own inbound endpoint is
published or guessable (then the host must be locked down to the gateway, or senders
bypass the filter); the SPF lint and lookup count; the DMARC policy; DKIM selectors;
the host's verification TXT; the MX TTL. Every finding has a severity; errors mean mail
is lost, forged or unfiltered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver

from mxflow.auth.dmarc import DmarcRecordError
from mxflow.auth.dmarc import parse_record as parse_dmarc_record
from mxflow.auth.spf import to_dns_name
from mxflow.dns.names import require_domain
from mxflow.dns.resolver import describe_dns_error
from mxflow.errors import MxflowError
from mxflow.records.spf_lint import Finding, LintReport, Severity, lint_domain

# MX host suffix -> (service, kind). kind: "filter" (scenario 1), "archiver" (scenario 2),
# "host" (the mailbox host itself: no third party in the MX).
KNOWN_MX: tuple[tuple[str, str, str], ...] = (
    ("mail.protection.outlook.com", "Exchange Online (the mailbox host)", "host"),
    ("mimecast.com", "Mimecast", "filter"),
    ("mimecast.co.za", "Mimecast", "filter"),
    ("pphosted.com", "Proofpoint", "filter"),
    ("ppe-hosted.com", "Proofpoint Essentials", "filter"),
    ("barracudanetworks.com", "Barracuda", "filter"),
    ("messagelabs.com", "Symantec/Broadcom Email Security (MessageLabs)", "filter"),
    ("mailcontrol.com", "Forcepoint", "filter"),
    ("iphmx.com", "Cisco Secure Email (IronPort)", "filter"),
    ("sophos.com", "Sophos Email", "filter"),
    ("trendmicro.com", "Trend Micro Email Security", "filter"),
    ("gateway.mxflow.test", "mxflow gateway (lab)", "filter"),
    ("archive.mxflow.test", "mxflow archiver (lab)", "archiver"),
)
HOST_INBOUND_SUFFIX = "mail.protection.outlook.com"
COMMON_SELECTORS = (
    "selector1",
    "selector2",
    "default",
    "dkim",
    "google",
    "k1",
    "s1",
    "s2",
    "mail",
    "mxflow",
)
MX_TTL_ADVICE = 3600


@dataclass(frozen=True)
class MxTarget:
    preference: int
    host: str
    service: str
    kind: str  # filter, archiver, host, other


@dataclass
class DomainCheck:
    """Everything `dns check` found about one domain."""

    domain: str
    scenario: str = "unknown"
    mx: list[MxTarget] = field(default_factory=list)
    mx_ttl: int | None = None
    spf: LintReport | None = None
    dmarc: dict[str, str] = field(default_factory=dict)
    dkim_selectors: list[str] = field(default_factory=list)
    verification: list[str] = field(default_factory=list)
    host_inbound: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def has_errors(self) -> bool:
        return any(f.severity == Severity.ERROR for f in self.all_findings)

    @property
    def all_findings(self) -> list[Finding]:
        return self.findings + (self.spf.findings if self.spf else [])

    def add(self, severity: Severity, code: str, message: str, fix: str = "") -> None:
        self.findings.append(Finding(severity, code, message, fix, domain=self.domain))

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "scenario": self.scenario,
            "mx": [vars(m) for m in self.mx],
            "mx_ttl": self.mx_ttl,
            "spf": self.spf.as_dict() if self.spf else None,
            "dmarc": self.dmarc,
            "dkim_selectors": self.dkim_selectors,
            "verification": self.verification,
            "host_inbound": self.host_inbound,
            "errors": sum(f.severity == Severity.ERROR for f in self.all_findings),
            "findings": [f.as_dict() for f in self.findings],
        }

    def table(self) -> str:
        """A readable report: the facts, then every finding with its severity."""
        rows = [
            ("domain", self.domain),
            ("scenario", self.scenario),
            (
                "MX",
                ", ".join(f"{m.preference} {m.host} ({m.service})" for m in self.mx) or "(none)",
            ),
            ("MX TTL", f"{self.mx_ttl} s" if self.mx_ttl is not None else "-"),
            ("SPF", (self.spf.record or "(none)") if self.spf else "-"),
            ("SPF lookups", f"{self.spf.lookups}/10" if self.spf else "-"),
            ("DMARC", self.dmarc.get("record", "(none)")),
            ("DKIM selectors", ", ".join(self.dkim_selectors) or "(none found)"),
            ("verification", ", ".join(self.verification) or "(none)"),
            ("host inbound", self.host_inbound or "(not found)"),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        lines.append("")
        findings = sorted(self.all_findings, key=lambda f: _SEVERITY_ORDER[f.severity])
        lines += [str(f) for f in findings] or ["no problems found"]
        errors = sum(f.severity == Severity.ERROR for f in findings)
        warnings = sum(f.severity == Severity.WARNING for f in findings)
        lines.append(f"{errors} error(s), {warnings} warning(s)")
        return "\n".join(lines) + "\n"


_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


def classify_mx(host: str) -> tuple[str, str]:
    """(service, kind) of an MX host from the table of known suffixes."""
    name = host.lower().rstrip(".")
    for suffix, service, kind in KNOWN_MX:
        if name == suffix or name.endswith("." + suffix):
            return service, kind
    return "unknown service", "other"


def guess_host_inbound(domain: str) -> str:
    """The host's inbound endpoint for `domain` as the reference host names it."""
    return f"{domain.replace('.', '-')}.{HOST_INBOUND_SUFFIX}"


class _Dns:
    """Lookups for the check; a failed secondary lookup is noted, not fatal."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver
        self.failures: list[str] = []

    async def answer(
        self, name: str, rdtype: str, *, strict: bool = False
    ) -> dns.resolver.Answer | None:
        """The answer (possibly empty), or None when the name does not exist or failed."""
        try:
            return await self.resolver.resolve(
                to_dns_name(name), rdtype, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            return None
        except (dns.exception.DNSException, ValueError) as exc:
            if strict:
                raise
            self.failures.append(f"{name} {rdtype}: {describe_dns_error(exc)}")
            return None

    async def txt(self, name: str) -> list[str]:
        answer = await self.answer(name, "TXT")
        if answer is None or answer.rrset is None:
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset]

    async def exists(self, name: str) -> bool:
        for rdtype in ("A", "AAAA"):
            answer = await self.answer(name, rdtype)
            if answer is not None and answer.rrset is not None:
                return True
        return False


def parse_dmarc(text: str) -> dict[str, str]:
    tags: dict[str, str] = {"record": text}
    for part in text.split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            tags[key.strip().lower()] = value.strip()
    return tags


async def check_domain(
    domain: str,
    resolver: dns.asyncresolver.Resolver,
    *,
    selectors: tuple[str, ...] = COMMON_SELECTORS,
    public: bool = True,
) -> DomainCheck:
    """Resolve and judge everything the domain publishes for its mail flow."""
    domain = require_domain(domain)
    result = DomainCheck(domain)
    lookup = _Dns(resolver)
    try:
        mx_answer = await lookup.answer(domain, "MX", strict=True)
    except (dns.exception.DNSException, ValueError) as exc:
        raise MxflowError(f"cannot look up MX {domain}: {describe_dns_error(exc)}") from exc
    try:
        await _check_mx(result, lookup, mx_answer)
        result.spf = await lint_domain(domain, resolver, public=public)
        await _check_spf_senders(result)
        await _check_dmarc(result, lookup)
        await _check_dkim(result, lookup, selectors)
        await _check_verification(result, lookup)
    except dns.exception.DNSException as exc:
        raise MxflowError(f"DNS lookup for {domain} failed: {describe_dns_error(exc)}") from exc
    for failure in lookup.failures:
        result.add(
            Severity.WARNING,
            "dns-error",
            f"lookup failed: {failure}; the report is incomplete there",
            "check the name servers of that name",
        )
    return result


async def _check_mx(result: DomainCheck, lookup: _Dns, answer: dns.resolver.Answer | None) -> None:
    domain = result.domain
    if answer is None:
        result.add(Severity.ERROR, "no-domain", f"{domain} does not exist in DNS")
        return
    if answer.rrset is None:
        result.add(
            Severity.ERROR,
            "no-mx",
            f"{domain} has no MX: senders fall back to its A record or cannot deliver",
            "publish MX records (mxflow dns plan)",
        )
    else:
        result.mx_ttl = answer.rrset.ttl
        for rdata in sorted(answer.rrset, key=lambda r: r.preference):
            host = rdata.exchange.to_text(omit_final_dot=True)
            service, kind = classify_mx(host)
            result.mx.append(MxTarget(rdata.preference, host, service, kind))
            if host and not await lookup.exists(host):
                result.add(
                    Severity.ERROR,
                    "mx-no-address",
                    f"MX host {host} has no A/AAAA record: mail to it cannot be delivered",
                    f"publish an address for {host} or remove the MX",
                )
    kinds = {m.kind for m in result.mx}
    if kinds == {"filter"}:
        result.scenario = "1: MX to a filtering service (" + result.mx[0].service + ")"
    elif kinds == {"archiver"}:
        result.scenario = "2: MX to a non-filtering service (" + result.mx[0].service + ")"
        result.add(
            Severity.WARNING,
            "enhanced-filtering",
            "the MX service does not filter: without Enhanced Filtering the host sees "
            "every message as coming from it (SPF of senders fails, spam passes)",
            "enable Enhanced Filtering for Connectors on the host with the service's IPs",
        )
    elif kinds == {"host"}:
        result.scenario = "host directly (no third party in the MX)"
    elif "host" in kinds and kinds & {"filter", "archiver"}:
        result.scenario = "mixed: the MX names the third party and the host"
        result.add(
            Severity.ERROR,
            "mx-bypass",
            "the MX lists the mailbox host next to the third party: senders can skip the "
            "third party by using the other MX",
            "publish only the third party's MX hosts",
        )
    elif result.mx:
        result.scenario = "unknown: the MX points to " + ", ".join(m.host for m in result.mx)
    if result.mx_ttl is not None and result.mx_ttl > MX_TTL_ADVICE:
        result.add(
            Severity.INFO,
            "mx-ttl",
            f"MX TTL is {result.mx_ttl} s: a change (cut-over or rollback) takes that long "
            "to reach every sender",
            f"lower it to {MX_TTL_ADVICE} s or less before changing the MX",
        )
    inbound = guess_host_inbound(domain)
    if await lookup.exists(inbound):
        result.host_inbound = inbound
        if kinds & {"filter", "archiver"}:
            result.add(
                Severity.WARNING,
                "bypass-risk",
                f"the host's own endpoint {inbound} resolves: anyone can send to it "
                "directly and skip the third party",
                "lock the host down: accept mail for the domain only through the connector "
                "from the third party (its IPs or its TLS certificate name)",
            )


async def _check_spf_senders(result: DomainCheck) -> None:
    spf = result.spf
    if spf is None or spf.record is None:
        return
    if (
        any(m.kind in {"filter", "archiver"} for m in result.mx)
        and "include:" not in spf.record.lower()
    ):
        result.add(
            Severity.WARNING,
            "spf-host",
            "SPF names no include: the mailbox host's outbound servers are probably missing",
            "add the host's include (e.g. include:spf.protection.outlook.com)",
        )


async def _check_dmarc(result: DomainCheck, lookup: _Dns) -> None:
    records = [t for t in await lookup.txt(f"_dmarc.{result.domain}") if _is_dmarc(t)]
    if not records:
        result.add(
            Severity.WARNING,
            "no-dmarc",
            "no DMARC record: receivers apply no policy to mail forging the domain",
            f'publish TXT "v=DMARC1; p=none; rua=mailto:..." at _dmarc.{result.domain}',
        )
        return
    if len(records) > 1:
        result.add(
            Severity.ERROR,
            "multiple-dmarc",
            "several DMARC records: receivers ignore them all",
            "keep one",
        )
    result.dmarc = parse_dmarc(records[0])
    try:  # judged by the parser mxflow's own DMARC evaluation uses, as receivers would
        record = parse_dmarc_record(records[0])
    except DmarcRecordError as exc:
        result.add(
            Severity.ERROR,
            "dmarc-syntax",
            f"the DMARC record does not parse ({exc}): receivers apply no policy",
            "fix it, e.g. v=DMARC1; p=none; rua=mailto:dmarc-reports@" + result.domain,
        )
        return
    if record.p == "none":
        result.add(
            Severity.INFO,
            "dmarc-none",
            "DMARC p=none: monitoring only",
            "once reports show legitimate mail aligned, move to p=quarantine, then p=reject",
        )
    elif record.p == "quarantine":
        result.add(Severity.INFO, "dmarc-quarantine", "DMARC p=quarantine", "next step: p=reject")
    if record.pct < 100 and record.p != "none":
        result.add(
            Severity.INFO,
            "dmarc-pct",
            f"DMARC pct={record.pct}: p={record.p} applies to {record.pct}% of failing mail, "
            "the rest gets the next milder policy",
            "raise pct to 100 once the reports are clean",
        )
    if not record.rua:
        result.add(
            Severity.WARNING,
            "dmarc-rua",
            "DMARC has no rua: you receive no aggregate reports",
            "add rua=mailto:dmarc-reports@" + result.domain,
        )


def _is_dmarc(text: str) -> bool:
    return text.replace(" ", "").lower().startswith("v=dmarc1")


async def _check_dkim(result: DomainCheck, lookup: _Dns, selectors: tuple[str, ...]) -> None:
    for selector in selectors:
        name = f"{selector}._domainkey.{result.domain}"
        answer = await lookup.answer(name, "TXT")
        if answer is not None and answer.rrset is not None:
            result.dkim_selectors.append(selector)
            continue
        cname = await lookup.answer(name, "CNAME")
        if cname is not None and cname.rrset is not None:
            target = cname.rrset[0].target.to_text(omit_final_dot=True)
            result.dkim_selectors.append(selector)
            result.add(
                Severity.WARNING,
                "dkim-dangling",
                f"DKIM selector {selector} is a CNAME to {target}, which has no key",
                f"publish the key at {target} (enable DKIM signing at the host)",
            )
    if not result.dkim_selectors:
        result.add(
            Severity.WARNING,
            "no-dkim",
            f"no DKIM key found at the common selectors ({', '.join(selectors)})",
            "publish the signer's selector records (mxflow dns plan)",
        )


async def _check_verification(result: DomainCheck, lookup: _Dns) -> None:
    for text in await lookup.txt(result.domain):
        if (
            text.startswith("MS=ms")
            or text.lower().endswith("-verification")
            or ("-site-verification=" in text or "-verification=" in text)
        ):
            result.verification.append(text)
    if not result.verification and result.host_inbound:
        result.add(
            Severity.INFO,
            "no-verification",
            "no domain-verification TXT (MS=ms...) found",
            "publish the host's verification TXT before adding the domain there",
        )
