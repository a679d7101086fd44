"""URLs in the body against URI blocklists (DNS): `URIBL_<ZONE>` symbols.

Hosts are taken from the decoded text and HTML (hrefs included), reduced to their last two
labels (the registered domain on the common TLDs) and looked up as `domain.zone`; an IP
host is looked up reversed, as DNSBLs expect. At most `MAX_LOOKUPS` distinct names per
message, so a message stuffed with links cannot turn into a DNS flood.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass

import dns.asyncresolver

from mxflow.checks import mime
from mxflow.checks.base import CheckResult, MessageContext, Phase
from mxflow.checks.dnsquery import LookupFailed, addresses, reversed_ip
from mxflow.checks.policy import FilterPolicy

_URL_HOST = re.compile(r"(?i)\b(?:https?|ftp)://(?:[^\s/@\"'<>]*@)?([^\s/:\"'<>()?#]+)")
_WWW_HOST = re.compile(r"(?i)(?<![\w.@/-])(www\.[a-z0-9-]+(?:\.[a-z0-9-]+)+)")
MAX_LOOKUPS = 20


def url_domains(view: mime.MimeView) -> list[str]:
    """The distinct registered domains (or IPs) linked from the message, in order."""
    found: dict[str, None] = {}
    for text, _ in view.texts:
        for pattern in (_URL_HOST, _WWW_HOST):
            for match in pattern.finditer(text):
                host = match.group(1).lower().rstrip(".")
                try:
                    ipaddress.ip_address(host)
                    found[host] = None
                    continue
                except ValueError:
                    pass
                labels = [label for label in host.split(".") if label]
                if len(labels) >= 2:
                    found[".".join(labels[-2:])] = None
    return list(found)


def _label(zone: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", zone.upper()).strip("_")


@dataclass
class UriblCheck:
    policy: FilterPolicy
    resolver: dns.asyncresolver.Resolver
    name: str = "uribl"
    phase: Phase = Phase.DATA

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        domains = url_domains(mime.view(ctx))[:MAX_LOOKUPS]
        queries: list[tuple[str, str, float, str]] = []
        for domain in domains:
            try:
                ipaddress.ip_address(domain)
                label = reversed_ip(domain)
            except ValueError:
                label = domain
            for zone, weight in sorted(self.policy.uribl_zones.items()):
                queries.append((domain, zone, weight, f"{label}.{zone}"))
        answers = await asyncio.gather(
            *(addresses(self.resolver, q[3]) for q in queries), return_exceptions=True
        )
        listed: set[str] = set()
        for (domain, zone, weight, _), answer in zip(queries, answers, strict=True):
            symbol = f"URIBL_{_label(zone)}"
            if isinstance(answer, LookupFailed):
                continue
            if isinstance(answer, BaseException):
                raise answer
            if symbol not in listed and any(a.startswith("127.") for a in answer):
                listed.add(symbol)
                result.add(symbol, self.policy.score(symbol, weight), f"{domain} in {zone}")
        return result
