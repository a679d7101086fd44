"""Linear-time scanning of message text: HTML tags, visible text, URLs and addresses.

Every content check reads text an attacker wrote, so nothing here may cost more than a
constant per character. A regular expression that can start at every position of a long
run and scan to its end (`<[^>]*>` over `<<<<…`, `[\\w.]+@` over a megabyte of `a.a.a.…`)
is quadratic: one 100 KB message stalled a node for 27 s that way. So:

* HTML is walked with `str.find` loops that never search the same stretch twice: a search
  that fails (no `>` after a `<`, no `-->` after a `<!--`, no `</style>`) is remembered, since
  a later start cannot succeed either, and a found `>` is reused by every `<` before it.
* Patterns that may fail at many positions start only at the beginning of a run (a
  negative look-behind) and their repetitions are bounded, so each start costs O(1).

The results match what the simple patterns gave on ordinary mail (the tokenizer's tokens,
hence the shipped model, did not change); they differ only on runs longer than the bounds.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import NamedTuple

MAX_TAG = 4096  # characters of one tag's attributes that are looked at
MAX_URL_PATH = 2048  # characters of a URL after its host
MAX_HOST = 1024  # escaped hosts (%31%30…) run long in spam
SHARED_TEXT = 64 * 1024  # characters of an HTML part whose tags are kept for reuse

URL = re.compile(
    rf"(?i)\b(?:https?|ftp)://([^\s/\"'<>()?#]{{1,{MAX_HOST}}})([^\s\"'<>]{{0,{MAX_URL_PATH}}})"
)
# An address starts at the beginning of its run only, with RFC 5321's 64-octet local part.
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@([\w-]{1,63}(?:\.[\w-]{1,63}){1,16})")
_NAME = re.compile(r"\s*(/?)\s*([a-zA-Z][a-zA-Z0-9]*)")
_BLOCK_END = {
    "style": re.compile(r"</style\s*>", re.IGNORECASE),
    "script": re.compile(r"</script\s*>", re.IGNORECASE),
}


class Tag(NamedTuple):
    """One HTML tag: `<a href=…>` is Tag(0, 9, False, "a", " href=…"). (A named tuple: a
    message has thousands of tags, and a tuple is the cheapest record to build.)"""

    start: int
    end: int  # just past its `>`
    closing: bool
    name: str  # lower case
    attrs: str  # at most MAX_TAG characters, as written


def tags(text: str) -> Iterator[Tag]:
    """The tags of `text` in order, as `<\\s*/?\\s*NAME[^>]*>` finds them, in linear time.

    The tokenizer and several content rules walk the same HTML part; a part of up to
    `SHARED_TEXT` characters is walked once and its tags kept for the next reader."""
    if len(text) <= SHARED_TEXT:
        return iter(_tag_list(text))
    return _walk(text)


@functools.lru_cache(maxsize=8)
def _tag_list(text: str) -> tuple[Tag, ...]:
    return tuple(_walk(text))


def forget() -> None:
    """Drop the kept tag lists (a benchmark that reads one message again and again measures
    the first reading, not the reuse)."""
    _tag_list.cache_clear()


def _walk(text: str) -> Iterator[Tag]:
    pos = 0
    gt = -1  # the next `>` at or after pos, once searched
    while True:
        lt = text.find("<", pos)
        if lt < 0:
            return
        if gt < lt:
            gt = text.find(">", lt)
            if gt < 0:
                return  # no tag can end: none after this one either
        found = _NAME.match(text, lt + 1, gt)
        if found is None:
            pos = lt + 1  # maybe a `<` inside this stretch starts a tag
            continue
        attrs = text[found.end() : min(gt, found.end() + MAX_TAG)]
        yield Tag(lt, gt + 1, bool(found.group(1)), found.group(2).lower(), attrs)
        pos = gt + 1


def visible_text(text: str, *, comments: bool = True) -> str:
    """`text` with style and script blocks, comments (when `comments`) and tags replaced by
    a space: what the old `re.sub` chain produced, in one linear pass (entities stay)."""
    out: list[str] = []
    dead: set[str] = set()  # searches that failed once and so fail from every later start
    pos = 0
    n = len(text)
    while pos < n:
        lt = text.find("<", pos)
        if lt < 0 or "gt" in dead:
            break
        out.append(text[pos:lt])
        end = _skip(text, lt, dead, comments)
        if end < 0:
            pos = lt
            break
        out.append(" ")
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _skip(text: str, lt: int, dead: set[str], comments: bool) -> int:
    """Where the markup starting at `lt` ends, or -1 when no markup can end after it."""
    if comments and "comment" not in dead and text.startswith("<!--", lt):
        end = text.find("-->", lt + 4)
        if end >= 0:
            return end + 3
        dead.add("comment")
    gt = text.find(">", lt)
    if gt < 0:
        dead.add("gt")
        return -1
    opening = text[lt + 1 : lt + 7].lower()
    for name, closing in _BLOCK_END.items():
        if name not in dead and opening.startswith(name):
            block = closing.search(text, gt + 1)
            if block is not None:
                return block.end()
            dead.add(name)
    return gt + 1


def runs(text: str) -> Iterator[str]:
    """The whitespace-separated runs of `text` (linear: `\\S+` never backtracks)."""
    for match in re.finditer(r"\S+", text):
        yield match.group()
