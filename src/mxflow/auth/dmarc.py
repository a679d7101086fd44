"""DMARC (RFC 7489): find the policy, check identifier alignment, decide the disposition.

* Discovery (§6.6.3): `_dmarc.<From domain>`, then `_dmarc.<organisational domain>`; the
  organisational domain comes from the Public Suffix List (`publicsuffixlist`, its bundled
  copy unless one is passed in). Records not starting with `v=DMARC1` are ignored; more
  than one remaining is no policy.
* Parsing is strict where the value decides the outcome (p, sp, adkim, aspf, pct, ri, rf,
  fo) and lenient where RFC 7489 says to ignore (unknown tags, report URIs of unknown
  schemes). Like OpenDMARC, an abbreviation of a keyword (`p=n`) is accepted.
* Alignment (§3.1): strict is equality, relaxed is equal organisational domains. The SPF
  identifier is the MAIL FROM domain (HELO for the null sender), passed in by the caller
  so the host's enhanced filtering can evaluate against a recovered IP.
* pct (§6.6.4): a message outside the sample gets the next milder policy.
"""

from __future__ import annotations

import email.utils
import functools
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import dns.asyncresolver
from publicsuffixlist import PublicSuffixList

from mxflow.auth.dkim import DkimSignatureResult
from mxflow.auth.results import comment as ar_comment
from mxflow.auth.results import header_values
from mxflow.auth.txt import DnsTempError, TxtLookup, TxtStatus, as_txt_lookup
from mxflow.errors import MxflowError

POLICIES = ("none", "quarantine", "reject")
MILDER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


class ParseStatus(StrEnum):
    """Why a record did not parse; the names follow OpenDMARC's DMARC_PARSE_* codes."""

    OKAY = "DMARC_PARSE_OKAY"
    EMPTY = "DMARC_PARSE_ERROR_EMPTY"
    BAD_VERSION = "DMARC_PARSE_ERROR_BAD_VERSION"
    BAD_VALUE = "DMARC_PARSE_ERROR_BAD_VALUE"
    NO_REQUIRED_P = "DMARC_PARSE_ERROR_NO_REQUIRED_P"
    SYNTAX = "DMARC_PARSE_ERROR_SYNTAX"


class DmarcRecordError(MxflowError):
    """A DMARC record that cannot be used: `status` says which kind, the text says where."""

    def __init__(self, status: ParseStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DmarcRecord:
    """A parsed `v=DMARC1` record, with RFC 7489 defaults filled in."""

    p: str
    sp: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    fo: tuple[str, ...] = ("0",)
    rf: tuple[str, ...] = ("afrf",)
    ri: int = 86400
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    text: str = ""


def _keyword(value: str, choices: Sequence[str], tag: str) -> str:
    """`value` as one of `choices`, accepting an unambiguous prefix (OpenDMARC does)."""
    word = value.strip().lower()
    matches = [c for c in choices if word and c.startswith(word)]
    if len(matches) != 1:
        raise DmarcRecordError(
            ParseStatus.BAD_VALUE, f"{tag}={value!r}: expected one of {', '.join(choices)}"
        )
    return matches[0]


def _uris(value: str) -> tuple[str, ...]:
    """Report URIs (§6.4): comma-separated; unknown schemes are kept but never used."""
    return tuple(u.strip() for u in value.split(",") if u.strip())


def parse_record(text: str) -> DmarcRecord:
    """Parse a DMARC TXT record; raises DmarcRecordError with an OpenDMARC-style status."""
    if not text or not text.strip():
        raise DmarcRecordError(ParseStatus.EMPTY, "empty DMARC record")
    tags: dict[str, str] = {}
    for index, chunk in enumerate(text.split(";")):
        if not chunk.strip():
            continue
        name, sep, value = chunk.partition("=")
        name = name.strip().lower()
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            if index == 0:
                raise DmarcRecordError(ParseStatus.BAD_VERSION, "record must start with v=DMARC1")
            raise DmarcRecordError(ParseStatus.SYNTAX, f"{chunk.strip()!r} is not tag=value")
        if index == 0 and (name != "v" or value.strip() != "DMARC1"):
            raise DmarcRecordError(
                ParseStatus.BAD_VERSION, f"record starts with {chunk.strip()!r}, not v=DMARC1"
            )
        tags.setdefault(name, value.strip())
    if "p" not in tags:
        raise DmarcRecordError(ParseStatus.NO_REQUIRED_P, "no p= tag (required)")
    p = _keyword(tags["p"], POLICIES, "p")
    sp = _keyword(tags["sp"], POLICIES, "sp") if "sp" in tags else None
    adkim = _keyword(tags.get("adkim", "r"), ("relaxed", "strict"), "adkim")[0]
    aspf = _keyword(tags.get("aspf", "r"), ("relaxed", "strict"), "aspf")[0]
    pct_text = tags.get("pct", "100")
    # ASCII digits only: str.isdigit() accepts "²", which int() refuses (a fuzz finding)
    if not re.fullmatch(r"[0-9]+", pct_text) or int(pct_text) > 100:
        raise DmarcRecordError(ParseStatus.BAD_VALUE, f"pct={pct_text!r}: expected 0 to 100")
    ri_text = tags.get("ri", "86400")
    if not re.fullmatch(r"[0-9]+", ri_text):
        raise DmarcRecordError(ParseStatus.BAD_VALUE, f"ri={ri_text!r}: expected seconds")
    rf = tuple(_keyword(v, ("afrf", "iodef"), "rf") for v in tags.get("rf", "afrf").split(":"))
    fo = tuple(v.strip() for v in tags.get("fo", "0").split(":"))
    if any(v not in {"0", "1", "d", "s"} for v in fo):
        raise DmarcRecordError(ParseStatus.BAD_VALUE, f"fo={tags['fo']!r}: expected 0, 1, d, s")
    return DmarcRecord(
        p=p,
        sp=sp,
        adkim=adkim,
        aspf=aspf,
        pct=int(pct_text),
        fo=fo,
        rf=rf,
        ri=int(ri_text),
        rua=_uris(tags.get("rua", "")),
        ruf=_uris(tags.get("ruf", "")),
        text=text,
    )


@functools.lru_cache(maxsize=1)
def default_psl() -> PublicSuffixList:
    """The Public Suffix List bundled with `publicsuffixlist` (parsed once)."""
    return PublicSuffixList()


def normalise_domain(domain: str) -> str | None:
    """Lower-case, without surrounding dots; None for a name with empty labels."""
    name = domain.strip().strip(".").lower()
    if not name or ".." in name:
        return None
    return name


def registrable_domain(domain: str, psl: PublicSuffixList | None = None) -> str | None:
    """The public suffix plus one label, or None (a public suffix itself, or malformed)."""
    found = (psl or default_psl()).privatesuffix(domain)
    return str(found) if found else None


def organizational_domain(domain: str, psl: PublicSuffixList | None = None) -> str | None:
    """RFC 7489 §3.2: the registrable domain; a public suffix is its own."""
    name = normalise_domain(domain)
    if name is None:
        return None
    return registrable_domain(name, psl) or name


def aligned(
    from_domain: str, auth_domain: str, mode: str, psl: PublicSuffixList | None = None
) -> bool:
    """Identifier alignment (§3.1): `mode` "s" strict (equal) or "r" relaxed (same org)."""
    left, right = normalise_domain(from_domain), normalise_domain(auth_domain)
    if left is None or right is None:
        return False
    if left == right:
        return True
    if mode.lower().startswith("s"):
        return False
    left_org = organizational_domain(left, psl)
    return left_org is not None and left_org == organizational_domain(right, psl)


class FromError(MxflowError):
    """The message has no single usable RFC5322.From domain (§6.6.1)."""


def from_domain_of(raw: bytes) -> str:
    """The domain of the one author address in From:, or FromError."""
    values = header_values(raw, "From")
    if not values:
        raise FromError("no From header")
    if len(values) > 1:
        raise FromError("more than one From header")
    addresses = [a for _, a in email.utils.getaddresses(values) if a]
    domains = {a.rpartition("@")[2].strip().rstrip(">").lower() for a in addresses}
    if len(domains) != 1 or "" in domains:
        raise FromError(f"From must name one author domain, found {values[0]!r}")
    (domain,) = domains
    if normalise_domain(domain) is None:
        raise FromError(f"From domain {domain!r} is not a domain name")
    return domain


@dataclass(frozen=True)
class DmarcResult:
    """RFC 7489 result (pass/fail/none/temperror/permerror) and what to do with the mail."""

    result: str
    from_domain: str = ""
    policy_domain: str = ""
    record: DmarcRecord | None = None
    policy: str = "none"  # the p= or sp= that applies
    disposition: str = "none"  # after pct sampling
    spf_aligned: bool = False
    dkim_aligned: bool = False
    aligned_dkim_domains: tuple[str, ...] = field(default_factory=tuple)
    reason: str = ""

    def ar_part(self) -> str:
        """The `dmarc=` Authentication-Results part (RFC 7489 §11.2)."""
        comment = ""
        if self.record is not None:
            sp = self.record.sp or self.record.p
            comment = f" (p={self.record.p} sp={sp} dis={self.disposition})"
        elif self.reason:
            comment = f" ({ar_comment(self.reason)})"
        header_from = f" header.from={self.from_domain}" if self.from_domain else ""
        return f"dmarc={self.result}{comment}{header_from}"


async def find_record(
    from_domain: str, lookup: TxtLookup, psl: PublicSuffixList | None = None
) -> tuple[str, DmarcRecord | None, str]:
    """(policy domain, record or None, reason) after §6.6.3 discovery.

    Raises DnsTempError when a lookup fails temporarily and DmarcRecordError when the
    record found does not parse.
    """
    name = normalise_domain(from_domain) or from_domain
    candidates = [name]
    org = organizational_domain(name, psl)
    if org and org != name:
        candidates.append(org)
    for domain in candidates:
        answer = await lookup.txt(f"_dmarc.{domain}")
        if answer.status is not TxtStatus.FOUND:
            continue
        records = [r for r in answer.records if re.match(r"\s*v\s*=\s*DMARC1\s*(;|$)", r)]
        if len(records) > 1:
            return domain, None, f"more than one DMARC record at _dmarc.{domain}"
        if records:
            return domain, parse_record(records[0]), ""
    return name, None, "no DMARC record"


async def evaluate_dmarc(
    from_domain: str,
    *,
    spf_result: str,
    spf_domain: str,
    dkim_results: Iterable[DkimSignatureResult],
    resolver: dns.asyncresolver.Resolver | TxtLookup,
    psl: PublicSuffixList | None = None,
    sample: float | None = None,
) -> DmarcResult:
    """DMARC for a message whose author domain is `from_domain`.

    `spf_result`/`spf_domain` are the SPF result and the domain it was evaluated for (MAIL
    FROM, or HELO for the null sender); `sample` in [0, 1) decides pct (random if None).
    """
    lookup = as_txt_lookup(resolver)
    try:
        policy_domain, record, reason = await find_record(from_domain, lookup, psl)
    except DnsTempError as exc:
        return DmarcResult("temperror", from_domain, reason=f"DNS: {exc}")
    except DmarcRecordError as exc:
        return DmarcResult("permerror", from_domain, reason=str(exc))
    if record is None:
        return DmarcResult("none", from_domain, policy_domain, reason=reason)
    spf_ok = spf_result == "pass" and aligned(from_domain, spf_domain, record.aspf, psl)
    dkim_domains = tuple(
        r.domain
        for r in dkim_results
        if r.result == "pass" and aligned(from_domain, r.domain, record.adkim, psl)
    )
    is_subdomain = normalise_domain(from_domain) != policy_domain
    policy = (record.sp or record.p) if is_subdomain else record.p
    if spf_ok or dkim_domains:
        return DmarcResult(
            "pass",
            from_domain,
            policy_domain,
            record,
            policy,
            "none",
            spf_ok,
            bool(dkim_domains),
            dkim_domains,
        )
    draw = random.random() if sample is None else sample
    disposition = policy if draw * 100 < record.pct else MILDER[policy]
    return DmarcResult(
        "fail",
        from_domain,
        policy_domain,
        record,
        policy,
        disposition,
        reason="neither SPF nor DKIM is aligned and passing",
    )
