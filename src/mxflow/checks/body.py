"""Body shape: HTML-only and image-only mail, text and HTML parts that disagree, hidden text.

Why these mark spam whatever the corpus: a sender who wants a filter to read one thing and a
person another hides words (white or zero-size text, `display:none` blocks full of words
chosen to look like ham) or sends the message as a picture with almost no text; bulk
software that builds the HTML from a template often sends a plain-text part that has
nothing to do with it (a fixed "view this in your browser" or an unrelated text). Person-
to-person mail and most legitimate newsletters show the same words in both parts and
little or no hidden text (a short hidden preheader is normal, so hidden text counts only
from `HIDDEN_MIN_WORDS` words on).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

from mxflow.checks import textscan
from mxflow.checks.contentdoc import Document, Finding, attribute

SCORES = {
    "HTML_ONLY": 0.3,
    "HTML_IMAGE_ONLY": 1.5,
    "HTML_TEXT_MISMATCH": 1.0,
    "HTML_HIDDEN_TEXT": 2.0,
}
HIDDEN_MIN_WORDS = 30
IMAGE_ONLY_MAX_WORDS = 15
MISMATCH_MIN_WORDS = 30  # both parts need this many words to be compared
MISMATCH_MAX_OVERLAP = 0.15
_HIDING = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*[01](?:px|pt)?\b|"
    r"opacity\s*:\s*0(?:\.0*)?\b|color\s*:\s*(?:#fff(?:fff)?|white)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_]{3,}")


def findings(doc: Document) -> Iterator[Finding]:
    if doc.html and not any(text.strip() for text in doc.plain):
        yield Finding("HTML_ONLY", "HTML part without a text part")
        words = sum(len(_WORD.findall(text[:20_000])) for text in doc.visible)
        images = sum(1 for tag in doc.tags if tag.name == "img")
        if images and words < IMAGE_ONLY_MAX_WORDS:
            yield Finding("HTML_IMAGE_ONLY", f"{images} image(s), {words} words of text")
    if doc.plain and doc.visible:
        mismatch = _mismatch(doc.plain[0], doc.visible[0])
        if mismatch:
            yield Finding("HTML_TEXT_MISMATCH", mismatch)
    for text in doc.html:
        hidden = hidden_words(text)
        if hidden >= HIDDEN_MIN_WORDS:
            yield Finding("HTML_HIDDEN_TEXT", f"{hidden} words in hidden or invisible elements")
            break


def _mismatch(plain: str, visible: str) -> str:
    a = {w.lower() for w in _WORD.findall(plain[:20_000])}
    b = {w.lower() for w in _WORD.findall(visible[:20_000])}
    if len(a) < MISMATCH_MIN_WORDS or len(b) < MISMATCH_MIN_WORDS:
        return ""
    overlap = len(a & b) / min(len(a), len(b))
    if overlap > MISMATCH_MAX_OVERLAP:
        return ""
    return f"text and HTML parts share {overlap:.0%} of their words"


def hidden_words(text: str) -> int:
    """Words inside elements styled to be invisible (one hidden element at a time, so the
    walk stays linear; `<font color=white>` counts as hiding)."""
    count = 0
    hiding: textscan.Tag | None = None
    for tag in textscan.tags(text):
        if hiding is None:
            if not tag.closing and _hides(tag):
                hiding = tag
            continue
        if tag.closing and tag.name == hiding.name:
            inner = text[hiding.end : tag.start]
            count += len(_WORD.findall(html.unescape(textscan.visible_text(inner))))
            hiding = None
    return count


def _hides(tag: textscan.Tag) -> bool:
    if _HIDING.search(attribute(tag.attrs, "style")):
        return True
    if tag.name == "font":
        color = attribute(tag.attrs, "color").lower()
        return color in ("#ffffff", "#fff", "white") or attribute(tag.attrs, "size") == "0"
    return False
