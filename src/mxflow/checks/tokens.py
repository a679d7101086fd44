"""Tokens for the statistical classifier: what in a message tells spam from ham.

Much of the signal is outside the words, so besides the decoded subject and text (HTML
stripped, every charset) a message yields tokens for its header layout (which headers,
how many), sender and recipient shapes, `Received` hops, mailer, MIME structure and
charsets, URL hosts, HTML features (tags, hidden text tricks) and attachment types. Each
token carries a prefix naming where it came from (`subject:`, `url:`, `hdr:` …) so the
explanation an administrator reads says why. Headers a filter or a receiving server adds
(X-Spam-*, X-Forefront-*, X-Barracuda-*, amavis's and SpamAssassin's status lines,
Authentication-Results, Received-SPF) are ignored so mxflow never learns from its own or
another system's verdict, and so is a `[SPAM]` tag a filter put in front of the subject;
so are headers the receiving side's delivery agent or mail client stamps (Delivered-To,
X-Keywords, Status, Thunderbird's X-Mozilla-*, X-UIDL …): they say where a message was
collected, not who sent it, and a model that learns them learns its training mailbox (a
model trained on one collection read every message without its stamps as the other class).
The tokens of the header section and the MIME structure (`HEADER_PREFIXES`) are the
classifier's second view, scored apart from the text's.

Text a reader does not see (hidden or footnote-size elements, body.py) is left out: it is
where spam plants ordinary words to pull the classifier toward ham.

Besides the lower-cased words: mixed-case spellings (`c:Viagra`), numbers as their shape
(`$19.99` and `$5.49` both become `num:$9.9`, so prices and phone numbers
generalise), the shape of machine-made headers (Message-ID, Content-Type boundary, Date,
X-Mailer: a bulk mailer's template shows in it), the order of the first headers (each
mailer writes them in its own order), and the full URL host and depth. Each was kept
because it raised the cross-validated recall at a fixed low false-positive rate
(bench/filter_accuracy.py) without making mail from elsewhere (SpamAssassin's own test
messages) look spammier. Left out after trying: word bigrams (a little better on the
corpus, but by remembering near-duplicates, at four times the model size), HTML tag and
attribute names, words of every header field, character n-grams (all worse), coarse text
statistics (length, capitals, URL count: they made short mail from elsewhere look spammy).
"""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Iterable, Iterator

from mxflow.checks import body, textscan
from mxflow.mime import MimeView

_WORD = re.compile(r"\S+")
_URL = textscan.URL
_EMAIL = textscan.EMAIL
_IP = re.compile(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b")
_STRIP = "\"'`.,;:!?()[]{}<>*_=+|~^\\/-"
# the local part starts a run (look-behind), so a long header costs one pass, not n
_ADDR = re.compile(r"<?(?<![^<>@\s])([^<>@\s]+)@([^<>@\s]+?)>?$")
_ZONE = re.compile(r"([+-]\d{4}|[A-Z]{2,4})\s*(\(.*\))?\s*$")
_IGNORED_HEADER_PREFIXES = (
    "x-spam",
    "x-forefront",
    "x-mxflow",
    "x-ms-exchange",
    # stamped where the message was delivered or read, not by its sender
    "delivered-to",
    "delivery-date",
    "x-original-date",
    "x-original-to",
    "x-keywords",
    "x-status",
    "status",
    "x-uid",
    "x-mailscanner",
    "x-virus",
    "x-filtered",
    "x-imap",
    "lines",
    "content-length",
    # the mail client that collected it (Thunderbird's flags, POP's UIDL, Gmail's labels)
    "x-mozilla",
    "x-account-key",
    "x-uidl",
    "x-gmail",
    # verdicts of the receiving side's and the lists' own filters and authentication checks:
    # another system's opinion (Barracuda, amavis, SpamAssassin as XStatus, BitDefender,
    # policyd, Brightmail, SPF / DKIM / ARC results), which is what the collection site ran,
    # not what the sender wrote
    "authentication-results",
    "received-spf",
    "arc-",
    "x-barracuda",
    "x-asg-",
    "x-amavis",
    "xstatus",
    "xlevel",
    "xchecker",
    "x-rc-spam",
    "x-rc-virus",
    "x-bitdefender",
    "x-policyd",
    "x-brightmail",
    "x-auditid",
    "x-greylist",
    "x-cm-score",
    "x-vr-score",
    "x-authority-analysis",
    "x-originalarrivaltime",
)
_IGNORED = _IGNORED_HEADER_PREFIXES
# A tag a filter put in front of the subject ("[SPAM]", "***SPAM***", "{Spam?}"): another
# filter's verdict, not the sender's words
_SUBJECT_TAG = re.compile(
    r"^\s*(?:[\[{(*]{1,8}\s{0,3}(?:suspected\s)?spam\??\s{0,3}[\]})*]{1,8}\s*)+", re.I
)
_SHAPED_HEADERS = ("message-id", "content-type", "date", "x-mailer")
_ORDER_HEADERS = 12  # header-order tokens from the first this many (Received excluded)
_HTML_FEATURES = {
    "img": "html:img",
    "font": "html:font",
    "table": "html:table",
    "a": "html:a",
    "form": "html:form",
    "input": "html:input",
    "script": "html:script",
    "iframe": "html:iframe",
    "center": "html:center",
    "b": "html:b",
    "map": "html:map",
}
_HEADERS_WITH_WORDS = ("subject",)
_SIMPLE_HEADERS = ("x-mailer", "user-agent", "x-mimeole", "precedence", "importance")
_MAX_TOKENS_PER_TEXT = 20_000
# Tokens of the header section and the MIME structure (the rest come from the subject and
# the text): the classifier's second view (classifier.py), trained and scored apart
HEADER_PREFIXES = (
    "shape:",
    "hdr:",
    "hdrorder:",
    "from:",
    "reply-to:",
    "sender:",
    "return-path:",
    "to:",
    "cc:",
    "received:",
    "message-id:",
    "content-type:",
    "charset:",
    "cte:",
    "date:",
    "part:",
    "filename-ext:",
    "defect:",
    "limit:",
    "text:none",
    *(f"{name}:" for name in _SIMPLE_HEADERS),
)


def is_header_token(token: str) -> bool:
    """Whether `token` describes the header section or the MIME structure (not the text)."""
    return token.startswith(HEADER_PREFIXES)


def shape(text: str, limit: int = 40) -> str:
    """The character classes of `text`, runs collapsed: `<20020909.OAZA@x>` -> `<9.A@a>`."""
    out: list[str] = []
    last = ""
    for ch in text[:limit]:
        if ch.isdigit():
            c = "9"
        elif ch.isalpha():
            c = "A" if ch.isupper() else "a"
        elif ch.isspace():
            c = " "
        else:
            c = ch
        if c != last:
            out.append(c)
            last = c
    return "".join(out)


def tokenize(mime: MimeView) -> list[str]:
    """The message's tokens, each once (set semantics, insertion order kept)."""
    seen: dict[str, None] = {}
    for token in _header_tokens(mime):
        seen[token] = None
    for text, is_html in mime.texts:
        for token in _text_tokens(text, is_html):
            seen[token] = None
    for token in _structure_tokens(mime):
        seen[token] = None
    return list(seen)


def _words(text: str, prefix: str = "") -> Iterator[str]:
    """The tokens of the whitespace-separated words of `text` (the first
    `_MAX_TOKENS_PER_TEXT`). Each distinct word is looked at once: its tokens are the same
    every time, and prose repeats most of its words."""
    runs = text.split(maxsplit=_MAX_TOKENS_PER_TEXT)
    limited = len(runs) > _MAX_TOKENS_PER_TEXT
    for run in dict.fromkeys(runs[:_MAX_TOKENS_PER_TEXT]):
        word = run.strip(_STRIP)
        n = len(word)
        if n < 3:
            continue
        if n > 12:
            if "@" in word or "://" in word:
                continue  # emails and URLs get their own tokens
            yield f"{prefix}skip:{word[0].lower()} {n // 10 * 10}"
            continue
        lower = word.lower()
        digits = 0 if word.isalpha() else sum(ch.isdigit() for ch in word)  # most are words
        if digits:
            yield f"{prefix}num:{shape(word)}"
            if digits > 1:
                continue  # the shape generalises, the literal number rarely does
        yield prefix + lower
        if word != lower and not word.isupper():
            yield f"{prefix}c:{word}"
        if word.isupper() and n > 3 and word.isalpha():
            yield f"{prefix}upper:{lower}"
        if "$" in word or "%" in word:
            yield f"{prefix}money"
    if limited:
        yield "limit:words"


def _text_tokens(text: str, is_html: bool) -> Iterator[str]:
    if is_html:
        yield from _html_features(text)
        text = html.unescape(textscan.visible_text(body.strip_marked(text)))
    elif "<html" in text[:2000].lower() or "</a>" in text.lower():
        yield "text:html-in-plain"
        text = textscan.visible_text(text, comments=False)
    for match in _URL.finditer(text):
        yield from _url_tokens(match.group(1), match.group(2))
    for match in _EMAIL.finditer(text):
        yield f"email:{match.group(1).lower()}"
    yield from _words(text)


def _url_tokens(host: str, path: str) -> Iterator[str]:
    host = host.lower().rsplit("@", 1)[-1].split(":", 1)[0].rstrip(".")
    if _IP.fullmatch(host):
        yield "url:ip-address"
        return
    if "%" in host:
        yield "url:escaped-host"
    labels = [label for label in host.split(".") if label]
    yield f"urlhost:{host[:60]}"
    depth = path.count("/")
    if depth > 1:
        yield f"urldepth:{min(depth, 6)}"
    if "?" in path:
        yield "url:query"
    if len(labels) >= 2:
        yield f"url:{'.'.join(labels[-2:])}"
    for label in labels[:-1]:
        if label != "www":
            yield f"url:{label}"
    if "%" in path:
        yield "url:escaped-path"
    for piece in re.split(r"[/.?=&_-]+", path.lower())[:8]:
        if 2 < len(piece) < 20:
            yield f"urlpath:{piece}"


def _html_features(text: str) -> Iterator[str]:
    count = 0
    seen: set[str] = set()
    for found in textscan.tags(text):
        count += 1
        if count > 5000:
            break
        if found.closing:
            continue
        tag, attrs = found.name, found.attrs
        feature = _HTML_FEATURES.get(tag)
        if feature and feature not in seen:
            seen.add(feature)
            yield feature
        lowered = attrs.lower()
        if "href" in lowered or "src" in lowered:
            for url in _URL.finditer(attrs):
                yield from _url_tokens(url.group(1), url.group(2))
        if "color" in lowered and "#ffffff" in lowered and "html:white-text" not in seen:
            seen.add("html:white-text")
            yield "html:white-text"
        if "display:none" in lowered.replace(" ", "") and "html:hidden" not in seen:
            seen.add("html:hidden")
            yield "html:hidden"
        if tag == "font" and "size" in lowered:
            size = re.search(r"size\s*=\s*\"?([+-]?\d)", lowered)
            if size:
                yield f"html:fontsize:{size.group(1)}"
    if count == 0:
        yield "html:no-tags"


def _header_tokens(mime: MimeView) -> Iterator[str]:
    counts: dict[str, int] = {}
    for name, value in mime.headers:
        if name.startswith(_IGNORED_HEADER_PREFIXES):
            continue
        counts[name] = counts.get(name, 0) + 1
        if name in _SHAPED_HEADERS:
            yield f"shape:{name}:{shape(value.strip())}"
        if name in _HEADERS_WITH_WORDS:
            yield from _subject_tokens(value)
        elif name in ("from", "reply-to", "sender", "return-path"):
            yield from _address_tokens(name, value)
        elif name in ("to", "cc"):
            addresses = [a for a in value.split(",") if "@" in a]
            # how many, not whose: the recipients' domains are the protected site's own
            # (every message at one site has them), so they would only teach the model
            # which mailbox its training mail was collected in
            yield f"{name}:count:{min(len(addresses), 10)}"
        elif name == "received":
            yield from _received_tokens(value)
        elif name == "message-id":
            found = re.search(r"@([^>\s]+)>?", value)
            yield f"message-id:@{found.group(1).lower()}" if found else "message-id:invalid"
        elif name == "content-type":
            lowered = value.lower()
            yield f"content-type:{lowered.split(';', 1)[0].strip()}"
            charset = re.search(r"charset\s*=\s*\"?([\w.:-]+)", lowered)
            if charset:
                yield f"charset:{charset.group(1)}"
        elif name in _SIMPLE_HEADERS:
            yield f"{name}:{' '.join(value.lower().split())[:40]}"
        elif name == "content-transfer-encoding":
            yield f"cte:{value.strip().lower()[:20]}"
        elif name == "date":
            zone = _ZONE.search(value.strip()[-80:])  # a date is short; bound the search
            yield f"date:zone:{zone.group(1)}" if zone else "date:zone:none"
    for name, count in counts.items():
        yield f"hdr:{name}:{min(count, 5)}"
    names = [n for n, _ in mime.headers if n != "received" and not n.startswith(_IGNORED)]
    for first, second in itertools.pairwise(names[:_ORDER_HEADERS]):
        yield f"hdrorder:{first}>{second}"
    for name in ("date", "message-id", "from", "to", "subject", "mime-version"):
        if name not in counts:
            yield f"hdr:missing:{name}"


def _subject_tokens(value: str) -> Iterator[str]:
    value = _SUBJECT_TAG.sub("", value)
    yield from _words(value, "subject:")
    if value.strip() == "":
        yield "subject:empty"
    if "!!" in value:
        yield "subject:bangs"
    if re.search(r"\s{3,}", value):
        yield "subject:spaces"
    letters = [c for c in value if c.isalpha()]
    if len(letters) > 8 and sum(c.isupper() for c in letters) / len(letters) > 0.7:
        yield "subject:mostly-upper"
    for word in _WORD.findall(value):
        if 1 <= len(word) < 3 and word.isalnum():
            yield f"subject:short:{word.lower()}"


def _address_tokens(name: str, value: str) -> Iterator[str]:
    text = value.strip()
    found = _ADDR.search(text)
    if not found:
        yield f"{name}:no-address"
        return
    local, domain = found.group(1).lower(), found.group(2).lower().rstrip(">")
    yield f"{name}:domain:{domain}"
    yield f"{name}:addr:{local}@{domain}"
    if any(ch.isdigit() for ch in local):
        yield f"{name}:local-has-digits"
    display = text[: found.start()].strip().strip('"')
    if display:
        yield from _words(display, f"{name}:name:")
    else:
        yield f"{name}:no-name"


def _received_tokens(value: str) -> Iterator[str]:
    lowered = " ".join(value.lower().split())[:500]
    for match in re.finditer(r"\b(?:from|by)\s+([a-z0-9.-]+\.[a-z]{2,})", lowered):
        labels = match.group(1).split(".")
        yield f"received:{'.'.join(labels[-2:])}"
    for match in _IP.finditer(lowered):
        a, b, c, _ = match.groups()
        yield f"received:{a}"
        yield f"received:{a}.{b}"
        yield f"received:{a}.{b}.{c}"
    if "unknown" in lowered:
        yield "received:unknown"
    for proto in ("esmtp", "smtp", "nnfmp", "pop3", "http", "local"):
        if f" with {proto}" in lowered:
            yield f"received:with-{proto}"
            break


def _structure_tokens(mime: MimeView) -> Iterable[str]:
    for ctype in mime.content_types[:30]:
        yield f"part:{ctype}"
    for charset in mime.charsets[:10]:
        yield f"charset:{charset}"
    for attachment in mime.attachments[:10]:
        name = attachment.filename.lower()
        if "." in name:
            yield f"filename-ext:{name.rsplit('.', 1)[1][:10]}"
    for defect in mime.defects[:10]:
        yield f"defect:{defect}"
    for limit in mime.limits:
        yield f"limit:{limit}"
    if not mime.texts:
        yield "text:none"
