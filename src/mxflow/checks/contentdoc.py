"""What the corpus-independent content rules read, extracted once per message, in linear time.

The rules (body.py, links.py, obfuscation.py, phishing.py, lexicon.py, prose.py, encoding.py)
need the same few things: the visible text of each part and its words, the links with the
text shown for them, the forms, the sender's and recipients' domains. `Document.build`
takes them from the shared bounded MIME walk (`mxflow.mime`) with the linear scanners of
`textscan`, so the rules stay small and no rule can make a hostile message expensive.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from email.utils import getaddresses
from functools import cached_property

from mxflow import mime
from mxflow.auth.dmarc import organizational_domain
from mxflow.checks import textscan

MAX_ANCHORS = 200  # links looked at per message
MAX_ANCHOR_TEXT = 300  # characters of one link's text
MAX_WORDS_CHARS = 30_000  # of the subject and text split into words: the pitch comes early
_WORD = re.compile(r"[\w%$']+")


def words(text: str) -> list[str]:
    """The lower-cased words of the first MAX_WORDS_CHARS characters (`%`, `$`, `'` kept)."""
    return _WORD.findall(text[:MAX_WORDS_CHARS].lower())


@dataclass(frozen=True)
class Anchor:
    """A link: where it goes, and the text a reader sees for it."""

    href: str
    text: str


@dataclass
class Document:
    """One message as the content rules see it."""

    view: mime.MimeView
    plain: list[str] = field(default_factory=list)  # text/plain parts
    html: list[str] = field(default_factory=list)  # text/html parts, as written
    visible: list[str] = field(default_factory=list)  # text/html parts, tags stripped
    anchors: list[Anchor] = field(default_factory=list)
    tags: list[textscan.Tag] = field(default_factory=list)  # opening tags (bounded)
    from_name: str = ""
    from_address: str = ""
    recipient_domains: list[str] = field(default_factory=list)

    @property
    def from_domain(self) -> str:
        return self.from_address.rpartition("@")[2].lower()

    @property
    def subject(self) -> str:
        return self.view.header("subject") or ""

    @property
    def text(self) -> str:
        """Every visible text of the message, parts separated by a newline."""
        return "\n".join([*self.plain, *self.visible])

    @cached_property
    def words(self) -> list[str]:
        """`words` of the subject and the text, split once for every rule that reads them."""
        return words(self.subject + "\n" + self.text)

    @classmethod
    def build(cls, view: mime.MimeView, recipients: list[str]) -> Document:
        doc = cls(view)
        for text, is_html in view.texts:
            if is_html:
                doc.html.append(text)
                doc.visible.append(html.unescape(textscan.visible_text(text)))
                doc._read_tags(text)
            else:
                doc.plain.append(text)
        doc._read_addresses(recipients)
        return doc

    def _read_tags(self, text: str) -> None:
        opened: textscan.Tag | None = None
        for tag in textscan.tags(text):
            if len(self.tags) < 5000 and not tag.closing:
                self.tags.append(tag)
            if tag.name != "a" or len(self.anchors) >= MAX_ANCHORS:
                continue
            if not tag.closing:
                opened = tag
            elif opened is not None:
                shown = text[opened.end : min(tag.start, opened.end + MAX_ANCHOR_TEXT)]
                href = attribute(opened.attrs, "href")
                if href:
                    shown = " ".join(html.unescape(textscan.visible_text(shown)).split())
                    self.anchors.append(Anchor(html.unescape(href), shown))
                opened = None

    def _read_addresses(self, recipients: list[str]) -> None:
        from_values = self.view.header_all("from")[:1]
        pairs = getaddresses(from_values) if from_values else []
        if pairs and "@" in pairs[0][1]:
            self.from_name, self.from_address = pairs[0][0].strip(), pairs[0][1].strip()
        domains: dict[str, None] = {}
        addresses = list(recipients)
        if not addresses:  # `filter check` without --rcpt: the To/Cc the reader sees
            values = self.view.header_all("to")[:1] + self.view.header_all("cc")[:1]
            addresses = [a for _, a in getaddresses(values)]
        for address in addresses[:50]:
            if "@" in address:
                domains[address.rpartition("@")[2].strip("<> ").lower()] = None
        self.recipient_domains = [d for d in domains if d]


def attribute(attrs: str, name: str) -> str:
    """The value of attribute `name` in a tag's attribute text ("" when absent).

    An unclosed quote runs to the end instead of failing, so the search never rescans."""
    pattern = _ATTRIBUTES.get(name)
    if pattern is None:
        pattern = re.compile(
            rf"(?:^|[\s\"'/]){re.escape(name)}\s*=\s*(?:\"([^\"]*)\"?|'([^']*)'?|([^\s>]*))",
            re.IGNORECASE,
        )
        _ATTRIBUTES[name] = pattern
    found = pattern.search(attrs)
    if found is None:
        return ""
    return next((g for g in found.groups() if g is not None), "").strip()


_ATTRIBUTES: dict[str, re.Pattern[str]] = {}


def org(domain: str) -> str:
    """The organisational domain (Public Suffix List), or the name itself."""
    domain = domain.lower().strip(".")
    return organizational_domain(domain) or domain


@dataclass(frozen=True)
class Finding:
    """A rule's result: the symbol (its default score is in the rule module's SCORES) and
    the reason a person reads."""

    symbol: str
    detail: str
