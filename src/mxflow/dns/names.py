"""Syntax of the domain names an admin types: command-line options and topology files.

Checked before anything is asked or written, because a typo (a space, an empty label)
would otherwise come back as a puzzling REFUSED or NXDOMAIN, or as a broken zone file.
Underscores are allowed: mail DNS is full of them (`_dmarc`, `_domainkey`).
"""

from __future__ import annotations

import contextlib
import re

from mxflow.errors import MxflowError

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?"
_NAME_RE = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*", re.IGNORECASE)


def is_domain_name(text: str, *, min_labels: int = 2) -> bool:
    """True for letters, digits, `-` and `_` in labels of 1 to 63, at least `min_labels`."""
    return bool(_NAME_RE.fullmatch(text)) and text.count(".") + 1 >= min_labels


def require_domain(text: str) -> str:
    """`text` as an admin typed it, as the lower-case ASCII name to query (an IDN becomes
    its xn-- form, the final dot goes), or a one-line MxflowError."""
    domain = text.strip().rstrip(".").lower()
    with contextlib.suppress(UnicodeError):  # not a valid IDN: reported below
        domain = domain.encode("idna").decode("ascii")
    if not is_domain_name(domain):
        raise MxflowError(f"{text!r} is not a domain name (expected e.g. contoso.com)")
    return domain
