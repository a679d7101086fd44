"""The vocabulary of fraud and of mail-order drugs: money, urgency, credentials, pharmacy.

Why this marks spam whatever the corpus: advance-fee fraud, phishing and most sales spam
work by the same levers — a sum of money, a deadline, a request to log in or confirm an
account — and say so in a few stock phrases. One phrase alone is ordinary (people discuss
money and passwords), so a symbol needs several distinct phrases of a kind, and the strong
one needs two kinds in the same message ("verify your account within 24 hours").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

from mxflow.checks.contentdoc import Document, Finding, words

SCORES = {
    "LEX_MONEY": 0.7,
    "LEX_URGENCY": 0.7,
    "LEX_CREDENTIALS": 1.0,
    "LEX_FRAUD_COMBO": 1.5,
    "LEX_PHARMA": 2.0,
}
PHRASES: dict[str, tuple[str, ...]] = {
    "money": (
        "million dollars",
        "million usd",
        "wire transfer",
        "western union",
        "moneygram",
        "bank account",
        "beneficiary",
        "inheritance",
        "next of kin",
        "lottery",
        "you have won",
        "winner",
        "prize",
        "cash bonus",
        "earn money",
        "extra income",
        "make money",
        "financial freedom",
        "100% free",
        "risk free",
        "no cost",
        "double your",
        "investment",
        "credit card",
        "debt",
        "mortgage",
        "loan",
        "bitcoin",
        "crypto",
        "dollars",
        "per week",
        "per month",
        "save up to",
        "lowest price",
        "discount",
    ),
    "urgency": (
        "act now",
        "urgent",
        "immediately",
        "limited time",
        "expires",
        "expire",
        "within 24",
        "within 48",
        "final notice",
        "last chance",
        "don't delay",
        "do not delay",
        "hurry",
        "today only",
        "suspended",
        "will be closed",
        "will be terminated",
        "deadline",
        "respond promptly",
        "as soon as possible",
        "order now",
        "call now",
        "click here",
    ),
    "credentials": (
        "verify your account",
        "confirm your account",
        "confirm your identity",
        "update your account",
        "update your information",
        "validate your",
        "your password",
        "reset your password",
        "sign in to",
        "log in to",
        "login to",
        "security alert",
        "unusual activity",
        "unauthorized",
        "account has been",
        "account will be",
        "social security number",
        "pin number",
        "billing information",
    ),
}
# Drugs and knock-offs sold by mail: the largest kind of spam for twenty years, and words
# a business correspondent has little reason to put together (two distinct ones are needed)
PHARMA = (
    "viagra",
    "cialis",
    "levitra",
    "kamagra",
    "pharmacy",
    "prescription",
    "erectile",
    "erection",
    "penis",
    "enlargement",
    "weight loss",
    "diet pill",
    "replica",
    "rolex",
    "tramadol",
    "xanax",
    "valium",
    "vicodin",
    "phentermine",
    "meds",
    "pills",
)
MIN_PHARMA = 2
MIN_PHRASES = 3  # distinct phrases of one kind for its symbol
_NOT_WORD = re.compile(r"[^\w%$']+")
# phrase words, indexed by the first four letters of the first word: a text word is looked
# up once (a dictionary probe), and only the few phrases that start like it are compared
_INDEX: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
for _kind, _phrases in PHRASES.items():
    for _phrase in _phrases:
        _words = tuple(_NOT_WORD.sub(" ", _phrase).split())
        _INDEX.setdefault(_words[0][:4], []).append((_words, _phrase, _kind))


def counts(text: str) -> dict[str, int]:
    """Distinct phrases of each kind in `text`; a phrase's last word matches as a prefix
    ("expire" finds "expires", "loan" finds "loans"), the others exactly."""
    return count_words(words(text))


def count_words(tokens: list[str]) -> dict[str, int]:
    """`counts` of a text already split by `words`."""
    found: dict[str, set[str]] = {kind: set() for kind in PHRASES}
    # the distinct words that may start a phrase first (prose repeats its words), then
    # only their places: a set look-up per word instead of a slice and a dict look-up
    starts = {token for token in set(tokens) if token[:4] in _INDEX}
    for i in [i for i, token in enumerate(tokens) if token in starts] if starts else ():
        token = tokens[i]
        for phrase_words, phrase, kind in _INDEX[token[:4]]:
            n = len(phrase_words)
            here = tokens[i : i + n]
            last = here[-1] if len(here) == n else ""
            if last.startswith(phrase_words[-1]) and here[:-1] == list(phrase_words[:-1]):
                found[kind].add(phrase)
    return {kind: len(phrases) for kind, phrases in found.items()}


PHARMA_WORDS = frozenset(p for p in PHARMA if " " not in p)
PHARMA_PAIRS = frozenset(p for p in PHARMA if " " in p)
PHARMA_FIRSTS = frozenset(p.split(" ", 1)[0] for p in PHARMA_PAIRS)


def findings(doc: Document) -> Iterator[Finding]:
    tokens = doc.words
    named = words(doc.from_name) + tokens
    distinct = set(named)
    pharma = distinct & PHARMA_WORDS
    if not distinct.isdisjoint(PHARMA_FIRSTS):  # a pair is looked for only where one starts
        pairs = itertools.pairwise(named)
        pharma |= {f"{a} {b}" for a, b in pairs if a in PHARMA_FIRSTS} & PHARMA_PAIRS
    if len(pharma) >= MIN_PHARMA:
        yield Finding("LEX_PHARMA", "drug or knock-off words: " + ", ".join(sorted(pharma)[:5]))
    found = count_words(tokens)
    symbols = {"money": "LEX_MONEY", "urgency": "LEX_URGENCY", "credentials": "LEX_CREDENTIALS"}
    strong = [kind for kind, n in found.items() if n >= MIN_PHRASES]
    for kind in strong:
        yield Finding(symbols[kind], f"{found[kind]} distinct {kind} phrases")
    if len(strong) >= 2 or (found["credentials"] >= 2 and found["urgency"] >= 2):
        summary = ", ".join(f"{kind} {n}" for kind, n in found.items())
        yield Finding("LEX_FRAUD_COMBO", f"phrases of several kinds ({summary})")
