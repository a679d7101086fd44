"""Phishing shapes: forms that ask for a password, attachments that are only a link or a
form, replies diverted to another domain, display names that claim a brand or the
recipient's own organisation, mail "from" its own recipient.

Why these mark phishing whatever the corpus: a legitimate sender never asks for a password
in a mail form (and mail clients warn about forms at all); an HTML or PDF attachment whose
whole content is a form or one link is a web page smuggled past link scanning; `Reply-To`
at a free-mail provider while `From` names a company sends the victim's answer to the
fraudster (mailing lists set `Reply-To` to the list, which carries `List-Id`, so those are
exempt); and a display name is what most clients show instead of the address, so a name
that says "PayPal" or "Contoso IT" over an address elsewhere is an impersonation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.utils import getaddresses

from mxflow import mime
from mxflow.checks import brands, textscan
from mxflow.checks.contentdoc import Document, Finding, attribute, org

SCORES = {
    "PHISH_PASSWORD_FORM": 3.0,
    "HTML_FORM": 1.0,
    "ATTACH_HTML_FORM": 3.0,
    "ATTACH_HTML_REDIRECT": 3.0,
    "ATTACH_PDF_LINK_ONLY": 1.5,
    "REPLYTO_FREEMAIL": 2.0,
    "REPLYTO_OTHER_DOMAIN": 0.3,
    "FROM_NAME_BRAND": 2.5,
    "FROM_NAME_OWN_ORG": 2.0,
    "FROM_IS_RECIPIENT": 0.5,
}
FREEMAIL = frozenset(
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "ymail.com",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "msn.com",
        "aol.com",
        "mail.com",
        "gmx.com",
        "gmx.net",
        "gmx.de",
        "web.de",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "protonmail.com",
        "proton.me",
        "icloud.com",
        "me.com",
        "zoho.com",
        "qq.com",
        "163.com",
        "126.com",
    ]
)
ATTACHMENT_TEXT_MAX = 60  # visible words of an HTML attachment that is "only" a form/link
_REDIRECT = re.compile(
    r"http-equiv\s*=\s*[\"']?refresh|window\.location|location\.href|location\.replace",
    re.IGNORECASE,
)
_PDF_URI = re.compile(rb"/URI\s*\(")
_PDF_PAGE = re.compile(rb"/Type\s*/Page\b")
_WORD = re.compile(r"[^\W\d_]{2,}")


def findings(doc: Document) -> Iterator[Finding]:
    yield from _forms(doc.tags, "PHISH_PASSWORD_FORM", "HTML_FORM", "the message")
    for attachment in doc.view.attachments[:20]:
        yield from _attachment(attachment)
    yield from _reply_to(doc)
    yield from _display_name(doc)
    yield from _self_addressed(doc)


def _forms(tags: list[textscan.Tag], password: str, form: str, where: str) -> Iterator[Finding]:
    forms = [t for t in tags if t.name == "form"]
    if not forms:
        return
    secret = any(
        t.name == "input" and attribute(t.attrs, "type").lower() == "password" for t in tags
    )
    if secret:
        yield Finding(password, f"{where} has a form with a password field")
    elif form:
        action = attribute(forms[0].attrs, "action")[:80]
        yield Finding(form, f"{where} has a form (action {action or 'none'})")


def _attachment(attachment: mime.Attachment) -> Iterator[Finding]:
    name = attachment.filename.lower()
    kind = attachment.content_type
    head = attachment.data[:8]
    if kind == "text/html" or name.endswith((".html", ".htm", ".shtml", ".xhtml")):
        text = mime.decode_bytes(attachment.data[:300_000], "utf-8")
        tags = list(textscan.tags(text))
        words = len(_WORD.findall(textscan.visible_text(text)[:50_000]))
        label = f"attachment {attachment.filename or kind}"
        found = list(_forms(tags, "ATTACH_HTML_FORM", "ATTACH_HTML_FORM", label))
        if found and words <= ATTACHMENT_TEXT_MAX * 10:
            yield found[0]
        elif _REDIRECT.search(text[:300_000]):
            yield Finding("ATTACH_HTML_REDIRECT", f"{label} redirects the browser elsewhere")
    elif kind == "application/pdf" or name.endswith(".pdf") or head.startswith(b"%PDF"):
        data = attachment.data[:2_000_000]
        pages = len(_PDF_PAGE.findall(data))
        links = len(_PDF_URI.findall(data))
        if links and pages <= 1 and len(data) < 200_000:
            yield Finding(
                "ATTACH_PDF_LINK_ONLY",
                f"PDF {attachment.filename or ''} of {pages} page(s) with {links} link(s)",
            )


def _reply_to(doc: Document) -> Iterator[Finding]:
    view = doc.view
    values = view.header_all("reply-to")
    if not values or not doc.from_domain or view.header("list-id") or view.header("list-post"):
        return
    address = values[0].strip().rsplit("<", 1)[-1].strip(" >")
    if "@" not in address:
        return
    domain = address.rpartition("@")[2].lower().rstrip(">")
    if org(domain) == org(doc.from_domain):
        return
    if domain in FREEMAIL and doc.from_domain not in FREEMAIL:
        yield Finding("REPLYTO_FREEMAIL", f"From {doc.from_domain}, replies go to {domain}")
    else:
        yield Finding("REPLYTO_OTHER_DOMAIN", f"From {doc.from_domain}, replies go to {domain}")


def _display_name(doc: Document) -> Iterator[Finding]:
    name = doc.from_name.lower()
    sender = org(doc.from_domain) if doc.from_domain else ""
    if not name or not sender or "@" in name:
        return  # an address in the name is headers.py's FROM_NAME_SPOOF
    words = set(re.findall(r"[a-z0-9]+", name[:200]))
    squashed = "".join(ch for ch in name[:200] if ch.isalnum())
    for brand in brands.BRANDS:
        if brand in brands.COMMON_WORDS:
            continue  # "Apple Core", "Chase Smith": a word or a name as often as the brand
        claimed = brand in words if len(brand) < 4 else brand in squashed
        if claimed and not brands.owns(brand, sender) and sender.split(".")[0] != brand:
            yield Finding("FROM_NAME_BRAND", f"name {doc.from_name[:60]!r} over {doc.from_address}")
            return
    for domain in doc.recipient_domains:
        own = org(domain)
        label = own.split(".")[0]
        if own != sender and len(label) >= 4 and (own in name or label in words):
            yield Finding(
                "FROM_NAME_OWN_ORG",
                f"name {doc.from_name[:60]!r} claims {own}, address {doc.from_address}",
            )
            return


def _self_addressed(doc: Document) -> Iterator[Finding]:
    """From is the recipient's own address while the mail is not a note to oneself (it came
    with a reply path elsewhere, or in bulk): senders forge it to pass "known sender"
    checks and to hide who they are. Scored low: people do mail themselves, and rspamd gives
    its TO_EQ_FROM no weight at all."""
    sender = doc.from_address.lower()
    if not sender or "@" not in sender:
        return
    recipients = {a.lower() for _, a in getaddresses(doc.view.header_all("to")[:1])}
    if sender in recipients and doc.view.header("in-reply-to") is None:
        yield Finding("FROM_IS_RECIPIENT", f"From and To are both {sender}")
