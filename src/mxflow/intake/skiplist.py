"""Enhanced Filtering for Connectors (skip listing): who really sent a relayed message.

When mail reaches the host through a third party (scenario 2, or a gateway), the host
sees only the third party's IP, so SPF, DMARC and IP blocklists judge the wrong machine.
The reference host lets an inbound connector name the hops to skip: either the last
hop only (EFSkipLastIP = true) or the listed IPs (EFSkipIPs, used when EFSkipLastIP is
false: the two are alternatives, as in Set-InboundConnector). It then walks the
`Received:` lines from the top (newest), skipping those hops and private addresses, and
takes the first address it may not skip as the original sender. Only lines at or above
that hop are read: everything below was written by the original sender or before it, so
it is untrusted and must never choose the IP (a spammer can prepend any number of
forged `Received:` lines to the message it sends).

Scoping: with EFUsers set, enhanced filtering applies only when *every* recipient is
listed (DESIGN.md §1; the cmdlet reference says only "the recipients that Enhanced
Filtering for Connectors applies to"); a message with a mix of listed and unlisted
recipients is filtered as without it. In test mode (EFTestMode) the walk runs and its
finding is stamped, but the checks act on the connecting IP as without enhanced filtering.

Stamps, in the reference's form `ip=[a.b.c.d];domain=helo.name`:
`X-MS-Exchange-ExternalOriginalInternetSender` whenever an original sender was recovered
(also in test mode), and `X-MS-Exchange-SkipListedInternetSender` only when skip listing
acted (not in test mode). The caller should delete incoming copies of both (`STAMP_HEADERS`)
before adding its own, so a sender cannot pre-stamp a message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from mxflow.config import EnhancedFiltering, IPNetwork
from mxflow.intake.headerfields import iter_fields, rewrite_headers

SKIP_LISTED = "X-MS-Exchange-SkipListedInternetSender"
EXTERNAL_ORIGINAL = "X-MS-Exchange-ExternalOriginalInternetSender"
STAMP_HEADERS = (SKIP_LISTED, EXTERNAL_ORIGINAL)
MAX_HOPS = 30  # more skippable hops than this is a loop or an attack, not a mail path
_CLAUSE = 1024  # the `from` clause of a Received line is read up to this many characters
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Hop:
    """One `Received: from HELO (... [IP])` hop: the client that connected, and its HELO."""

    ip: str
    helo: str


@dataclass(frozen=True)
class SkipListResult:
    """What enhanced filtering found for one message, and what the checks should use.

    `sender_ip`/`sender_helo` are what SPF, DMARC and blocklists must be run against: the
    recovered original sender when skip listing acted, the connecting client otherwise
    (including test mode). `recovered` is the original sender found by the walk, if any.
    """

    applied: bool  # enhanced filtering was evaluated (connector has it, recipients in scope)
    test_mode: bool
    sender_ip: str
    sender_helo: str
    recovered: Hop | None = None
    skipped: tuple[str, ...] = ()  # the hops skipped, newest first
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=())

    @property
    def acted(self) -> bool:
        """Whether the checks use a recovered address instead of the connecting one."""
        return self.recovered is not None and not self.test_mode


def _addr(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _ip_in(text: str) -> IPAddress | None:
    """The first IP literal in `text`: `[a.b.c.d]`, `[IPv6:...]`, or a bare token."""
    start = text.find("[")
    while start >= 0:
        end = text.find("]", start)
        if end < 0:
            break
        inner = text[start + 1 : end]
        if inner[:5].lower() == "ipv6:":
            inner = inner[5:]
        ip = _addr(inner)
        if ip is not None:
            return ip
        start = text.find("[", end)
    for token in text.replace("(", " ").replace(")", " ").split():
        ip = _addr(token)
        if ip is not None:
            return ip
    return None


def _clause_end(text: str) -> int:
    low = text.lower()
    ends = [i for i in (low.find(" by "), low.find(";"), low.find("\tby ")) if i >= 0]
    return min(ends) if ends else len(text)


def parse_received(value: str) -> Hop | None:
    """The client hop a `Received:` value records, or None when it names no IP."""
    text = value[: _CLAUSE * 4].strip()
    if text[:5].lower() != "from ":
        return None
    clause = text[5 : 5 + _clause_end(text[5:])][:_CLAUSE].strip()
    helo, _, rest = clause.partition(" ")
    ip = _ip_in(rest) or _ip_in(helo)
    if ip is None:
        return None
    helo = "".join(c for c in helo if c.isprintable() and c not in ";[]()") or str(ip)
    return Hop(str(ip), helo[:255])


def received_by(value: str) -> str:
    """The `by` host of a Received value (lower case), or ""."""
    low = value[: _CLAUSE * 4].lower()
    at = low.find(" by ")
    return low[at + 4 :].split(None, 1)[0] if at >= 0 and low[at + 4 :].split() else ""


def apply_stamps(raw: bytes, result: SkipListResult) -> bytes:
    """`raw` without any incoming enhanced-filtering stamp (a sender cannot pre-stamp),
    with this result's stamps on top."""
    return rewrite_headers(raw, remove=STAMP_HEADERS, prepend=result.headers)


def in_scope(settings: EnhancedFiltering, rcpt_tos: Sequence[str]) -> bool:
    """EFUsers: with a list, enhanced filtering applies only when every recipient is on it."""
    if not settings.users:
        return True
    return bool(rcpt_tos) and all(r.lower() in settings.users for r in rcpt_tos)


def _why_skip(
    ip: IPAddress, first: bool, settings: EnhancedFiltering, private: Sequence[IPNetwork]
) -> str | None:
    if settings.skip_last_hop:
        if first:
            return "last hop"
    elif any(ip in net for net in settings.skip_ips):
        return "skip-listed"
    if any(ip in net for net in private):
        return "private"
    return None


def _received_values(headers: bytes) -> Iterator[str]:
    return (v for n, v in iter_fields(headers) if n.lower() == "received")


def stamp(hop: Hop, test_mode: bool) -> tuple[tuple[str, str], ...]:
    """The headers that record a recovered sender (see the module docstring)."""
    value = f"ip=[{hop.ip}];domain={hop.helo}"
    if test_mode:
        return ((EXTERNAL_ORIGINAL, value),)
    return ((SKIP_LISTED, value), (EXTERNAL_ORIGINAL, value))


def recover_sender(
    headers: bytes,
    *,
    client_ip: str,
    client_helo: str,
    settings: EnhancedFiltering | None,
    private_ranges: Sequence[IPNetwork],
    rcpt_tos: Sequence[str],
    own_hostname: str | None = None,
) -> SkipListResult:
    """Walk the Received chain of `headers` (the raw header section, top = newest).

    `settings` is the matched connector's enhanced filtering (None: it has none).
    `own_hostname`: when the top Received line is this node's own (by `own_hostname`,
    from `client_ip`), it is passed over, so the caller may give the headers before or
    after prepending its Received line. Linear in the size of the header section, and
    reads no further than the recovered hop.
    """
    without = SkipListResult(False, False, client_ip, client_helo)
    if settings is None or not settings.enabled:
        return without
    if not in_scope(settings, rcpt_tos):
        reason = "not every recipient is in ef_users: filtered as without enhanced filtering"
        return SkipListResult(False, settings.test_mode, client_ip, client_helo, reason=reason)
    ip = _addr(client_ip)
    if ip is None:
        return SkipListResult(True, settings.test_mode, client_ip, client_helo, reason="bad IP")
    hop, skipped, why = _walk(
        _received_values(headers),
        Hop(str(ip), client_helo),
        settings,
        private_ranges,
        own_hostname,
    )
    if hop is None:
        return _unrecovered(settings, client_ip, client_helo, skipped, why)
    test = settings.test_mode
    return SkipListResult(
        applied=True,
        test_mode=test,
        sender_ip=client_ip if test else hop.ip,
        sender_helo=client_helo if test else hop.helo,
        recovered=hop,
        skipped=tuple(skipped),
        reason=f"original sender {hop.ip} found after skipping {len(skipped)} hop(s)",
        headers=stamp(hop, test),
    )


def _walk(
    values: Iterator[str],
    hop: Hop,
    settings: EnhancedFiltering,
    private: Sequence[IPNetwork],
    own_hostname: str | None,
) -> tuple[Hop | None, list[str], str]:
    """From the connecting hop down: (the first hop not to skip, the skipped IPs, why
    nothing was recovered). Reads one Received line per skipped hop, never further."""
    pending = next(values, None)
    if pending is not None and own_hostname and received_by(pending) == own_hostname.lower():
        own = parse_received(pending)
        if own is not None and own.ip == hop.ip:
            pending = next(values, None)
    skipped: list[str] = []
    for depth in range(MAX_HOPS + 1):
        ip = _addr(hop.ip)
        assert ip is not None
        if _why_skip(ip, depth == 0, settings, private) is None:
            if not skipped:
                return None, skipped, "the connecting client is neither skip-listed nor private"
            return hop, skipped, ""
        skipped.append(hop.ip)
        if pending is None:
            return (
                None,
                skipped,
                f"every hop ({len(skipped)}) is skipped or private: no external sender found",
            )
        found = parse_received(pending)
        if found is None:
            return (
                None,
                skipped,
                f"Received line {depth + 1} names no client IP; the walk stops there",
            )
        hop, pending = found, next(values, None)
    return None, skipped, f"more than {MAX_HOPS} skippable hops"


def _unrecovered(
    settings: EnhancedFiltering, client_ip: str, helo: str, skipped: list[str], reason: str
) -> SkipListResult:
    return SkipListResult(
        True, settings.test_mode, client_ip, helo, skipped=tuple(skipped), reason=reason
    )
