"""Obfuscated words: letters from two scripts in one word, zero-width characters inside words,
digits or symbols standing in for letters of words filters look for, and such words glued
to their neighbours.

Why these mark spam whatever the corpus: they exist to make a word look right to a person
and wrong to a machine. A person writing Russian or Greek writes whole words in that script;
a word mixing Latin with Cyrillic or Greek look-alikes (`pаypal` with a Cyrillic `а`) is made
to pass a word match. Zero-width spaces and joiners between Latin letters change nothing a
reader sees. `V1agra`, `p@ssw0rd` and `fr3e` are written so only because the plain spelling
is filtered; only swaps that turn the word into one of `WATCHED` count, so product codes and
version numbers (`mp3`, `b2b`, `x86`) never do. A word split at its capitals counts piece
by piece (`Rep1icaWatches` is `Rep1ica` and `Watches`). Gluing a drug or knock-off word to
the next one with a capital at the seam (`YourPenis`, `RolexWatches`) keeps it from being a
word of its own for a filter while a reader still reads two words; written text and the
CamelCase names of software (`PowerPoint`, `FreeBSD`) do not glue those words.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator

from mxflow.checks import brands
from mxflow.checks.contentdoc import Document, Finding

SCORES = {
    "OBFU_MIXED_SCRIPT": 2.0,
    "OBFU_ZERO_WIDTH": 1.5,
    "OBFU_DIGIT_FOR_LETTER": 1.5,
    "OBFU_GLUED_WORD": 2.0,
}
ZERO_WIDTH_MIN = 3
SWAP_SCAN = 30_000  # characters of each text searched for swapped spellings (the pitch is early)
_ZERO_WIDTH = re.compile(r"[A-Za-z][\u200b\u200c\u200d\u2060\ufeff\u00ad]+[A-Za-z]")
WATCHED = frozenset(
    [
        "viagra",
        "cialis",
        "levitra",
        "pharmacy",
        "casino",
        "lottery",
        "password",
        "account",
        "verify",
        "login",
        "bank",
        "paypal",
        "bitcoin",
        "crypto",
        "free",
        "money",
        "cash",
        "credit",
        "loan",
        "winner",
        "prize",
        "urgent",
        "invoice",
        "refund",
        "unsubscribe",
        "offer",
        "discount",
        "pills",
        "weight",
        "sex",
        "porn",
        "dating",
        "replica",
        "rolex",
        "penis",
        "enlarge",
        "enlarger",
        "enlargement",
        "erection",
        "loss",
    ]
) | frozenset(brands.BRANDS)
# a word of 3-15 letters, digits, `$` or `@` with at least one letter and one non-letter;
# it can only start at the beginning of a run (look-behind first), so each run costs once
_SWAPPABLE = re.compile(
    r"(?<![\w$@])(?=[A-Za-z0-9$@]{0,14}[0-9$@])(?=[A-Za-z0-9$@]{0,14}[A-Za-z])"
    r"[A-Za-z0-9$@]{3,15}(?![\w$@])"
)
# Words sold by mail whose gluing to a neighbour is a disguise (see the module docstring)
GLUED = ("viagra", "cialis", "levitra", "penis", "pills", "replica", "rolex", "pharmacy")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# the words, found in the lower-cased text (a literal alternation: C scans for its first
# letters); the seam around each is then looked at in the original
_GLUED_WORDS = re.compile("|".join(GLUED))


def findings(doc: Document) -> Iterator[Finding]:
    texts = [doc.subject, *doc.plain, *doc.visible]
    mixed = _mixed_script_word(texts)
    if mixed:
        yield Finding("OBFU_MIXED_SCRIPT", f"{mixed!r} mixes Latin with Cyrillic or Greek")
    hidden = sum(len(_ZERO_WIDTH.findall(t[:200_000])) for t in texts if not t.isascii())
    if hidden >= ZERO_WIDTH_MIN:
        yield Finding("OBFU_ZERO_WIDTH", f"{hidden} zero-width characters inside words")
    swapped = _swapped_word(texts)
    if swapped:
        yield Finding("OBFU_DIGIT_FOR_LETTER", f"{swapped[0]!r} spells {swapped[1]!r}")
    glued = _glued_word(texts)
    if glued:
        yield Finding("OBFU_GLUED_WORD", f"{glued!r} glued to the next word")


# Cyrillic and Greek letters drawn like Latin ones: the homoglyphs of a disguised word
HOMOGLYPHS = frozenset("аеорсухіјѕԁһԛԝАВЕКМНОРСТХІЈЅαεορντΑΒΕΖΗΙΚΜΝΟΡΤΥΧ")


def _mixed_script_word(texts: list[str]) -> str:
    """A word of letters that is Latin but for a Cyrillic or Greek look-alike (`pаypal`);
    `μg` or `β-carotene` are not: μ and β look like no Latin letter."""
    for text in texts:
        if text.isascii():
            continue  # the common case, decided in C
        for run in text[:200_000].split():
            word = run.strip(".,;:!?()[]{}<>\"'*")
            if word.isascii() or not 4 <= len(word) <= 40 or not word.isalpha():
                continue
            ascii_letters = sum(ch.isascii() for ch in word)
            glyphs = sum(ch in HOMOGLYPHS for ch in word)
            if ascii_letters >= 2 and glyphs and ascii_letters + glyphs == len(word):
                return word
    return ""


def _swapped_word(texts: list[str]) -> tuple[str, str] | None:
    for text in texts:
        for match in _SWAPPABLE.finditer(text[:SWAP_SCAN]):
            for word in _CAMEL.split(match.group()):
                for plain in (brands.normalise(word), brands.normalise(word, one="i")):
                    if plain in WATCHED and plain != word.lower():
                        return word, plain
    return None


def _glued_word(texts: list[str]) -> str:
    """A word of GLUED written capitalised right after a lower-case letter (`YourPenis`) or
    right before a capitalised word (`RolexWatches`)."""
    for text in texts:
        sample = text[:SWAP_SCAN]
        lowered = sample.lower()
        if len(lowered) != len(sample):  # a letter whose lower case is longer (rare)
            lowered = sample.translate(_ASCII_LOWER)  # slower, keeps the offsets
        for match in _GLUED_WORDS.finditer(lowered):
            start, end = match.span()
            word = sample[start:end]
            before = sample[start - 1 : start]
            after = sample[end : end + 2]
            if _lower(before) and word[0].isupper() and not _lower(after[:1]):
                return word
            if not before.isalpha() and len(after) == 2 and after[0].isupper() and _lower(after[1]):
                return word
    return ""


def _lower(char: str) -> bool:
    return "a" <= char <= "z"
