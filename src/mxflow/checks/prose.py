"""How the text is written: word salad, shouting, and the sender's own "advertisement" label.

Why these mark spam whatever the corpus:

* Word salad. A statistical filter learns which words ham uses, so spam carries paragraphs
  of ordinary words (from an encyclopaedia, a novel, a news feed) to pull the classifier
  toward ham — "Bayes poisoning". Drawn one by one, those words are ordinary, but their
  order is not language: function words land next to each other in ways no sentence has
  ("the of", "with by", "and or was"). A writer, however hurried, almost never does that;
  a paragraph of salad does it every few lines. The count needs several such pairs and a
  share of the text (a typo, "the the", or a note on `the with statement` is one or two),
  and is keyed on English function words: text in another language does not fire it,
  rather than firing wrongly.
* Shouting. Half the letters of a text in capitals is a sales pitch raising its voice;
  people writing to someone do not, and the notices that do are a few lines long, so the
  rule needs `SHOUT_MIN_LETTERS` letters.
* The label. Several US states' laws and the FTC asked senders of unsolicited commercial
  mail to start the subject with "ADV:"; a sender who does says what the mail is.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator

from mxflow.checks.contentdoc import Document, Finding

SCORES = {"TEXT_WORD_SALAD": 2.5, "TEXT_SHOUTING": 1.0, "SUBJ_ADV_LABEL": 2.0}
SALAD_MIN_PAIRS = 10
SALAD_MIN_SHARE = 0.01  # of the words
DETERMINERS = frozenset({"the", "an"})
PREPOSITIONS = frozenset({"of", "to", "in", "for", "with", "on", "at", "by", "from"})
CONJUNCTIONS = frozenset({"and", "or", "but"})
AUXILIARIES = frozenset({"is", "are", "was", "were"})
FUNCTION_WORDS = DETERMINERS | PREPOSITIONS | CONJUNCTIONS | AUXILIARIES
SHOUT_MIN_LETTERS = 200
SHOUT_MIN_SHARE = 0.5  # of the (ASCII) letters in capitals
SHOUT_CHARS = 30_000
_UPPER = string.ascii_uppercase.encode()
_LOWER = string.ascii_lowercase.encode()
_ADV = re.compile(r"\s*[\[(]?adv\s*[:\])-]", re.IGNORECASE)


def impossible(first: str, second: str) -> bool:
    """Whether two adjacent lower-case words are a pair English does not write: an article
    before a function word ("the of"), a preposition before another preposition or a form
    of "to be" ("with by", "of is"; "in to" and "on to" are idiom, so "to" never counts
    second), a conjunction before a conjunction or "to be" ("and or", "but was"), or a
    function word twice ("the the")."""
    if first in DETERMINERS:
        return second in FUNCTION_WORDS
    if first in PREPOSITIONS:
        return second != "to" and (second in PREPOSITIONS or second in AUXILIARIES)
    if first in CONJUNCTIONS:
        return second in CONJUNCTIONS or second in AUXILIARIES
    return first == second and first in FUNCTION_WORDS


def salad_pairs(words: list[str]) -> int:
    """How many adjacent pairs of `words` (lower case, as `contentdoc.words` splits them)
    no English sentence has."""
    last = len(words) - 1
    return sum(
        1
        for i in [i for i, w in enumerate(words) if w in FUNCTION_WORDS]
        if i < last and impossible(words[i], words[i + 1])
    )


def shouting(text: str) -> tuple[int, float]:
    """(ASCII letters, share of them in capitals) of the first SHOUT_CHARS characters, by
    deleting each case from the ASCII bytes (a table look-up per byte, in C)."""
    sample = text[:SHOUT_CHARS].encode("ascii", "ignore")
    upper = len(sample) - len(sample.translate(None, _UPPER))
    letters = upper + len(sample) - len(sample.translate(None, _LOWER))
    return letters, upper / letters if letters else 0.0


def findings(doc: Document) -> Iterator[Finding]:
    words = doc.words
    pairs = salad_pairs(words)
    if pairs >= SALAD_MIN_PAIRS and pairs >= SALAD_MIN_SHARE * len(words):
        yield Finding(
            "TEXT_WORD_SALAD", f"{pairs} word pairs no sentence has, in {len(words)} words"
        )
    letters, share = shouting(doc.text)
    if letters >= SHOUT_MIN_LETTERS and share >= SHOUT_MIN_SHARE:
        yield Finding("TEXT_SHOUTING", f"{share:.0%} of {letters} letters in capitals")
    if _ADV.match(doc.subject):
        yield Finding(
            "SUBJ_ADV_LABEL", f"the subject is labelled an advertisement: {doc.subject[:60]!r}"
        )
