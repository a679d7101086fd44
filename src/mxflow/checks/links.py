"""Links: text naming one domain while the link goes to another, and URLs that hide where
they go (an IP address, a shortener, punycode, a look-alike of a brand).

Why these mark spam and phishing whatever the corpus: the reader decides by what the link
says, the click goes where the href says, so a link that shows `www.yourbank.com` and goes
to another domain is a lie by construction; legitimate mail links to names (IP literals
cost the sender nothing to avoid); shorteners hide the destination from the reader and from
URI blocklists; an `xn--` label in a link is how look-alike Unicode domains are written;
and a domain that spells a brand it does not belong to exists to be mistaken for it.
A host named for pills or a pharmacy (`drugshop40a.ru`) says what the mail sells. Links to
many machine-made host names under one domain (`9d17.shop.example`, `a70.shop.example`,
`1b1.shop.example` in one message) are how bulk senders keep a URI blocklist, which lists
host names, from matching and tell which copy was clicked; a legitimate sender links to
the few fixed names of its site (`www`, `images`, and numbered mirrors such as `img1`,
`img2`, which share one shape and so count once).
Tracking redirects of legitimate newsletters do go to another domain than the text, but
their text is words ("Read more"), not a domain, so only text that is itself a domain or
URL is compared.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from mxflow.checks import brands
from mxflow.checks.contentdoc import Document, Finding, org
from mxflow.checks.textscan import URL

SCORES = {
    "LINK_TEXT_MISMATCH": 2.5,
    "URL_IP_LITERAL": 1.5,
    "URL_SHORTENER": 0.8,
    "URL_PUNYCODE": 1.0,
    "URL_LOOKALIKE": 3.0,
    "URL_PHARMA_HOST": 2.0,
    "URL_RANDOM_HOSTS": 2.0,
}
RANDOM_HOSTS_MIN = 3  # machine-made first labels of one domain, of as many shapes
_DIGITS = re.compile(r"\d+")
# parts of host names that sell drugs by mail (the pitch's own vocabulary, in the link)
PHARMA_HOST_WORDS = ("pharm", "pill", "drug", "viagra", "cialis", "levitra", "meds")
# at the start of a label or after a hyphen or digit: `techspecialist` is no `cialis`
_PHARMA_HOST = re.compile(r"(?:^|[.\-0-9])(" + "|".join(PHARMA_HOST_WORDS) + ")")
SHORTENERS = frozenset(
    [
        "bit.ly",
        "tinyurl.com",
        "t.co",
        "goo.gl",
        "ow.ly",
        "is.gd",
        "buff.ly",
        "rebrand.ly",
        "cutt.ly",
        "shorturl.at",
        "tiny.cc",
        "rb.gy",
        "t.ly",
        "bl.ink",
        "v.gd",
        "qr.ae",
        "s.id",
        "lnkd.in",
    ]
)
MAX_HOSTS = 200
_SHOWN_DOMAIN = re.compile(
    r"^(?:https?://)?(?:www\.)?([a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63}){1,8})(?:[/:?#]\S*)?$",
    re.IGNORECASE,
)


def host_of(url: str) -> str:
    """The host of an http(s)/ftp URL, lower case, without user, port or trailing dot."""
    found = URL.search(url[:4096])
    if not found:
        return ""
    return found.group(1).lower().rsplit("@", 1)[-1].split(":", 1)[0].strip(".[]")


def findings(doc: Document) -> Iterator[Finding]:
    yield from _mismatched_text(doc)
    hosts: dict[str, None] = {}
    for anchor in doc.anchors:
        host = host_of(anchor.href)
        if host:
            hosts[host] = None
    for text in [*doc.plain, *doc.visible]:
        for match in URL.finditer(text):
            if len(hosts) >= MAX_HOSTS:
                break
            hosts[match.group(1).lower().rsplit("@", 1)[-1].split(":", 1)[0].strip(".[]")] = None
    yield from _host_findings(list(hosts), doc)
    yield from _random_hosts(list(hosts))


def _random_hosts(hosts: list[str]) -> Iterator[Finding]:
    """Several hosts of one domain whose first labels carry digits and differ in shape."""
    labels: dict[str, set[str]] = {}
    for host in hosts:
        first = host.partition(".")[0]
        if not any(ch.isdigit() for ch in first) or _is_address(host):
            continue
        domain = org(host)
        if domain != host:
            labels.setdefault(domain, set()).add(first)
    for domain, found in labels.items():
        shapes = {_DIGITS.sub("9", label) for label in found}
        if len(found) >= RANDOM_HOSTS_MIN and len(shapes) >= RANDOM_HOSTS_MIN:
            shown = ", ".join(sorted(found)[:4])
            detail = f"links to {len(found)} made-up hosts of {domain} ({shown})"
            yield Finding("URL_RANDOM_HOSTS", detail)
            return


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _mismatched_text(doc: Document) -> Iterator[Finding]:
    for anchor in doc.anchors:
        shown = _SHOWN_DOMAIN.match(anchor.text)
        target = host_of(anchor.href)
        if not shown or not target or "." not in shown.group(1):
            continue
        shown_domain = shown.group(1).lower()
        if not re.search(r"[a-z]", shown_domain.rsplit(".", 1)[-1]):
            continue  # "1.5" or a version number, not a domain
        if org(shown_domain) != org(target):
            yield Finding("LINK_TEXT_MISMATCH", f"link text {shown_domain}, goes to {target}")
            return


def _host_findings(hosts: list[str], doc: Document) -> Iterator[Finding]:
    seen: set[str] = set()
    for host in hosts:
        for symbol, detail in _judge(host, doc):
            if symbol not in seen:
                seen.add(symbol)
                yield Finding(symbol, detail)


def _judge(host: str, doc: Document) -> Iterator[tuple[str, str]]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if not host.startswith("127."):
            yield "URL_IP_LITERAL", f"link to the address {host}"
        return
    organisational = org(host)
    if organisational in SHORTENERS or host in SHORTENERS:
        yield "URL_SHORTENER", f"link through the shortener {host}"
    if any(label.startswith("xn--") for label in host.split(".")):
        yield "URL_PUNYCODE", f"link to the internationalised name {host}"
    label = organisational.split(".", 1)[0]
    pharma = _PHARMA_HOST.search(host)
    if pharma:
        yield "URL_PHARMA_HOST", f"link to {host} ({pharma.group(1)!r} in the name)"
    brand = brands.brand_in_label(label)
    if brand and not brands.owns(brand, organisational) and org(doc.from_domain) != organisational:
        yield "URL_LOOKALIKE", f"link to {host}, which imitates {brand}"
