"""Body shape: HTML-only and image-only mail, text and HTML parts that disagree, hidden text.

Why these mark spam whatever the corpus: a sender who wants a filter to read one thing and a
person another hides words (white or zero-size text, `display:none` blocks full of words
chosen to look like ham) or sends the message as a picture with almost no text; bulk
software that builds the HTML from a template often sends a plain-text part that has
nothing to do with it (a fixed "view this in your browser" or an unrelated text). Person-
to-person mail and most legitimate newsletters show the same words in both parts and
little or no hidden text (a short hidden preheader is normal, so hidden text counts only
from `HIDDEN_MIN_WORDS` words on). Most of the text in footnote size (10 px or less) is the
same trick done in the open: the pitch is an image, the words are filler for the filter;
a legitimate footer in small print is a small share of the message's words. Headings
(`<h1>`-`<h6>`) opened in the middle of a sentence ("Jay Lake (born <h5>June</h5> 6,
1964)") are markup scattered at random through pasted text, so that no two copies of a run
hash alike for fingerprinting filters; an author or an editor puts headings between
paragraphs.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator

from mxflow.checks import textscan
from mxflow.checks.contentdoc import Document, Finding, attribute

SCORES = {
    "HTML_ONLY": 0.3,
    "HTML_IMAGE_ONLY": 1.5,
    "HTML_TEXT_MISMATCH": 1.0,
    "HTML_HIDDEN_TEXT": 2.0,
    "HTML_TINY_TEXT": 1.5,
    "HTML_HEADING_IN_SENTENCE": 2.0,
}
HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
HEADING_IN_SENTENCE_MIN = 2  # one can be a slip
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
# 10 px or less, the keywords x-small / xx-small (CSS's 10 and 9 px), or <font size=1>:
# footnote size, where filler that the reader is not meant to read goes (the "Bayes
# poisoning" paragraph under an image that carries the pitch)
_TINY = re.compile(
    r"font-size\s*:\s*(?:(?:[0-9]|10)(?:\.\d+)?(?:px|pt)\b|xx?-small\b)", re.IGNORECASE
)
TINY_MIN_WORDS = 40
TINY_MIN_SHARE = 0.5


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
    split = sum(headings_in_sentences(text) for text in doc.html)
    if split >= HEADING_IN_SENTENCE_MIN:
        yield Finding("HTML_HEADING_IN_SENTENCE", f"{split} headings opened inside sentences")
    for text, visible in zip(doc.html, doc.visible, strict=True):
        hidden, tiny = marked_words(text, _hides, _tiny)
        if hidden >= HIDDEN_MIN_WORDS:
            yield Finding("HTML_HIDDEN_TEXT", f"{hidden} words in hidden or invisible elements")
            break
        if tiny < TINY_MIN_WORDS:
            continue
        total = len(_WORD.findall(visible[:200_000]))
        if tiny >= TINY_MIN_SHARE * total:
            yield Finding("HTML_TINY_TEXT", f"{tiny} of {total} words in 10 px or smaller")
            break


def headings_in_sentences(text: str, names: frozenset[str] = HEADINGS) -> int:
    """Elements of `names` opened where a sentence goes on: the text just before the tag
    ends in a lower-case letter or a comma and the element's text follows on at once."""
    found = 0
    last = 0  # where the previous tag ended
    for tag in textscan.tags(text):
        if not tag.closing and tag.name in names:
            before = text[max(last, tag.start - 200) : tag.start].rstrip()
            after = text[tag.end : tag.end + 40].lstrip()
            if before and (before[-1].islower() or before[-1] == ",") and after[:1].isalnum():
                found += 1
        last = tag.end
    return found


def _mismatch(plain: str, visible: str) -> str:
    a = {w.lower() for w in _WORD.findall(plain[:20_000])}
    b = {w.lower() for w in _WORD.findall(visible[:20_000])}
    if len(a) < MISMATCH_MIN_WORDS or len(b) < MISMATCH_MIN_WORDS:
        return ""
    overlap = len(a & b) / min(len(a), len(b))
    if overlap > MISMATCH_MAX_OVERLAP:
        return ""
    return f"text and HTML parts share {overlap:.0%} of their words"


def marked_words(text: str, *kinds: Callable[[textscan.Tag], bool]) -> tuple[int, ...]:
    """For each kind of mark (hidden, tiny), the words inside elements whose opening tag it
    marks; one tag walk for all kinds, one marked element per kind at a time, up to its
    closing tag, so the walk stays linear."""
    counts = [0] * len(kinds)
    open_: list[textscan.Tag | None] = [None] * len(kinds)
    for tag in textscan.tags(text):
        for i, marks in enumerate(kinds):
            opened = open_[i]
            if opened is None:
                if not tag.closing and marks(tag):
                    open_[i] = tag
            elif tag.closing and tag.name == opened.name:
                inner = text[opened.end : tag.start]
                counts[i] += len(_WORD.findall(html.unescape(textscan.visible_text(inner))))
                open_[i] = None
    return tuple(counts)


def _tiny(tag: textscan.Tag) -> bool:
    if _TINY.search(attribute(tag.attrs, "style")):
        return True
    return tag.name == "font" and attribute(tag.attrs, "size") in ("1", "-2", "-3")


def _hides(tag: textscan.Tag) -> bool:
    if _HIDING.search(attribute(tag.attrs, "style")):
        return True
    if tag.name == "font":
        color = attribute(tag.attrs, "color").lower()
        return color in ("#ffffff", "#fff", "white") or attribute(tag.attrs, "size") == "0"
    return False


def planted(tag: textscan.Tag) -> bool:
    """Whether an element is styled so that a reader does not read it (hidden or tiny)."""
    return _hides(tag) or _tiny(tag)


def strip_marked(text: str, marks: Callable[[textscan.Tag], bool] = planted) -> str:
    """`text` without the elements whose opening tag `marks` (one at a time, up to its
    closing tag; linear): what the classifier should read is what the reader sees."""
    out: list[str] = []
    pos = 0
    hiding: textscan.Tag | None = None
    for tag in textscan.tags(text):
        if hiding is None:
            if not tag.closing and marks(tag):
                hiding = tag
            continue
        if tag.closing and tag.name == hiding.name:
            out.append(text[pos : hiding.start])
            pos = tag.end
            hiding = None
    out.append(text[pos:])
    return "".join(out)
