"""SASL PLAIN (RFC 4616) and LOGIN for SMTP AUTH (RFC 4954): decoding the client's words.

Every response is an attack until decoded: it is bounded before base64 decoding
(`MAX_RESPONSE` characters, so a client cannot make us decode megabytes), decoded
strictly (`validate=True`: no characters outside the alphabet, no missing padding), and
the user name and password must be UTF-8 without CR, LF or NUL and within their limits.
Anything else is `None`, which the protocol answers `501 5.5.2`.

This module decides nothing about who may log in: the protocol (protocol.py) runs the
exchange and asks its `Authenticator` whether the credentials are good.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass, field

MECHANISMS = ("PLAIN", "LOGIN")
MAX_RESPONSE = 2048  # base64 characters of one client response (1,536 octets decoded)
MAX_USERNAME = 320  # an address: 64 + 1 + 255
MAX_PASSWORD = 512
USERNAME_PROMPT = "334 VXNlcm5hbWU6"  # "Username:" (LOGIN, as every client expects)
PASSWORD_PROMPT = "334 UGFzc3dvcmQ6"  # "Password:"


class AuthOutcome(enum.Enum):
    """What the authenticator made of one login."""

    OK = "ok"
    BAD = "bad"  # wrong user name or password: 535 5.7.8
    THROTTLED = "throttled"  # too many failures from this client or for this account: 454


@dataclass(frozen=True)
class Credentials:
    """A user name and password as the client sent them (the password never in repr)."""

    username: str
    password: str = field(repr=False)


def decode_response(text: str) -> bytes | None:
    """One client response: strict base64 within MAX_RESPONSE (`=` is the empty one)."""
    text = text.strip()
    if len(text) > MAX_RESPONSE:
        return None
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_text(data: bytes, limit: int) -> str | None:
    """A user name or password: UTF-8, 1..`limit` octets, no CR, LF or NUL."""
    if not data or len(data) > limit or any(b in data for b in b"\r\n\0"):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_plain(data: bytes) -> Credentials | None:
    """RFC 4616 `[authzid] NUL authcid NUL passwd`; an authzid other than the authcid
    (acting as someone else) is refused as malformed: we offer no proxy logins."""
    parts = data.split(b"\0")
    if len(parts) != 3:
        return None
    authzid, authcid, passwd = parts
    username = decode_text(authcid, MAX_USERNAME)
    password = decode_text(passwd, MAX_PASSWORD)
    if username is None or password is None:
        return None
    if authzid and authzid != authcid:
        return None
    return Credentials(username, password)
