"""URLs in the body against URI blocklists (DNS): `URIBL_<ZONE>` symbols.

Hosts are taken from the decoded text and HTML (hrefs included). Each is looked up as its
registered domain (the Public Suffix List's: `shop.evil.co.uk` -> `evil.co.uk`, as SURBL
and URIBL list them) and, when it differs, as the full host name (as Spamhaus DBL lists
them); an IP host is looked up reversed, as DNSBLs expect. At most `MAX_LOOKUPS` distinct
names per message, so a message stuffed with links cannot turn into a DNS flood. Answers
that are no listing (127.0.0.1, 127.255.255.x) never count.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass

import dns.asyncresolver

from mxflow import mime
from mxflow.auth.dmarc import default_psl, registrable_domain
from mxflow.checks.dnsquery import query_zones, reversed_ip, zone_label
from mxflow.config.filter import FilterPolicy
from mxflow.mail import CheckResult, MessageContext, Phase

# bounded repetitions: a pattern that can scan a long run from many starts is quadratic
_URL_HOST = re.compile(r"(?i)\b(?:https?|ftp)://(?:[^\s/@\"'<>]{0,256}@)?([^\s/:\"'<>()?#]+)")
_WWW_HOST = re.compile(r"(?i)(?<![\w.@/-])(www\.[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63}){1,16})")
MAX_LOOKUPS = 20


def url_domains(view: mime.MimeView, limit: int | None = None) -> list[str]:
    """The distinct names to look up for the links of the message, in order: for each host
    its registered domain, then the host itself when it differs; IPs as they are."""
    found: dict[str, None] = {}
    for text, _ in view.texts:
        for pattern in (_URL_HOST, _WWW_HOST):
            for match in pattern.finditer(text):
                for name in _lookup_names(match.group(1)):
                    found[name] = None
                    if limit is not None and len(found) >= limit:
                        return list(found)
    return list(found)


def _lookup_names(host: str) -> list[str]:
    host = host.lower().strip(".")
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    labels = host.split(".")
    if len(labels) < 2 or not all(labels) or len(host) > 253:
        return []
    registered = registrable_domain(host)
    if registered is None:  # a public suffix itself (co.uk) or an unknown TLD
        return []
    return [registered] if registered == host else [registered, host]


@dataclass
class UriblCheck:
    policy: FilterPolicy
    resolver: dns.asyncresolver.Resolver
    name: str = "uribl"
    phase: Phase = Phase.DATA

    def __post_init__(self) -> None:
        default_psl()  # parse the Public Suffix List now, not on the first message's loop turn

    async def check(self, ctx: MessageContext) -> CheckResult:
        result = CheckResult()
        if not self.policy.uribl_zones:  # no list to ask: finding the hosts is 0.5 ms wasted
            return result
        view = mime.view(ctx)
        if sum(len(text) for text, _ in view.texts) > 100_000:  # hostile text: off the loop
            domains = await asyncio.to_thread(url_domains, view, MAX_LOOKUPS)
        else:
            domains = url_domains(view, MAX_LOOKUPS)
        codes = self.policy.return_codes
        lookups: list[tuple[str, str, float, dict[str, float]]] = []
        owners: list[str] = []  # the domain or IP each lookup is for
        for domain in domains:
            try:
                ipaddress.ip_address(domain)
                label = reversed_ip(domain)
            except ValueError:
                label = domain
            for zone, weight in sorted(self.policy.uribl_zones.items()):
                lookups.append((label, zone, weight, codes.get(zone, {})))
                owners.append(domain)
        judged = await query_zones(self.resolver, lookups)
        # one symbol per zone (the best score), naming every listed name, as rspamd does
        hits: dict[str, tuple[float, list[str]]] = {}
        for domain, (_, zone, _, _), found in zip(owners, lookups, judged, strict=True):
            if isinstance(found, tuple):  # failures and refused queries never count
                best, names = hits.get(zone, (found[0], []))
                hits[zone] = (max(best, found[0]), [*names, f"{domain} ({', '.join(found[1])})"])
        for zone, (score, names) in hits.items():
            symbol = f"URIBL_{zone_label(zone)}"
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            detail = f"in {zone}: {', '.join(names[:5])}{more}"
            result.add(symbol, self.policy.score(symbol, score), detail)
        return result
