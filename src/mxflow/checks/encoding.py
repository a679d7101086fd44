"""Encoding tricks and bulk-mail markers.

Why these mark spam whatever the corpus: base64 exists to carry bytes that are not plain
text; a short message of plain ASCII sent in base64 (or an ASCII subject wrapped in an
encoded word) is hidden from anything that reads the raw mail, which only a sender who
expects to be filtered bothers to do. Text that does not decode in its declared charset
comes from software that never looked at what it sent. And mail that tells the reader how
to unsubscribe is bulk mail; bulk mail from a real list manager says so in the headers
(`List-Unsubscribe`, RFC 2369 / 8058, which the large mailbox providers require of bulk
senders), so an unsubscribe line in the body without them marks a list nobody manages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from mxflow.checks.contentdoc import Document, Finding
from mxflow.mail import header_section

SCORES = {
    "B64_SHORT_ASCII": 1.0,
    "SUBJ_ENCODED_ASCII": 0.5,
    "CHARSET_MISMATCH": 1.0,
    "BULK_NO_LIST_HEADERS": 0.8,
}
B64_SHORT = 4096  # characters: short enough that base64 was no need
BAD_CHARS_MIN = 0.02  # share of U+FFFD (undecodable bytes) in a text
_SUBJECT = re.compile(rb"^subject:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE)
_ENCODED_WORD = re.compile(r"=\?[^?\s]{1,40}\?([bBqQ])\?[^?\s]{0,400}\?=")
# searched in lower-cased text: with IGNORECASE, re tries every branch at every position
# (380 µs for 8 KB; 60 µs this way)
_UNSUBSCRIBE = re.compile(
    r"unsubscribe|remove you from|be removed from|removed from (?:our|this) (?:mailing )?list|"
    r"opt[ -]?out|no longer wish to receive"
)


def findings(doc: Document, raw: bytes) -> Iterator[Finding]:
    view = doc.view
    cte = (view.header("content-transfer-encoding") or "").strip().lower()
    ctype = (view.header("content-type") or "text/plain").strip().lower()
    texts = doc.plain + doc.html
    if cte == "base64" and ctype.startswith("text/") and len(texts) == 1:
        text = texts[0]
        if len(text) <= B64_SHORT and text.isascii():
            yield Finding("B64_SHORT_ASCII", f"{len(text)} characters of ASCII sent as base64")
    subject = _SUBJECT.search(header_section(raw)[:65_536])
    if subject and _ENCODED_WORD.search(subject.group(1).decode("latin-1")):
        decoded = doc.subject
        if decoded.isascii() and decoded.strip():
            yield Finding("SUBJ_ENCODED_ASCII", "an ASCII subject sent as an encoded word")
    for text in texts:
        sample = text[:100_000]
        if len(sample) >= 200 and sample.count("\ufffd") / len(sample) >= BAD_CHARS_MIN:
            share = sample.count("\ufffd") / len(sample)
            yield Finding("CHARSET_MISMATCH", f"{share:.0%} of the text is not in its charset")
            break
    has_list = view.header("list-unsubscribe") or view.header("list-id")
    # the opt-out line is in the footer: the last few thousand characters of a part
    footers = (t[-8_000:].lower() for t in doc.plain + doc.visible)
    if not has_list and any(_UNSUBSCRIBE.search(footer) for footer in footers):
        yield Finding("BULK_NO_LIST_HEADERS", "unsubscribe text without List-Unsubscribe")
