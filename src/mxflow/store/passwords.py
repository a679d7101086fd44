"""Password hashes for submission logins: scrypt, memory-hard, one salt per user.

Why scrypt: it is in the standard library (hashlib, OpenSSL), so no new dependency, and
it is memory-hard (N=2^14, r=8: 16 MiB per guess), so a stolen directory file costs an
attacker memory as well as time for every guess. A hash is stored as one text value,
`scrypt$N$r$p$salt$hash` (base64), so the cost can be raised later without breaking
the hashes already stored: `verify_password` reads the parameters from the value.

Hashing takes tens of milliseconds of CPU; a server calls `verify_password` in a worker
thread (asyncio.to_thread), never on the event loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
MAX_PASSWORD = 512  # octets; longer is refused when set and never matches at login
_MAXMEM = 64 * 1024 * 1024
_MAX_N = 2**20  # a stored value may not ask for more work than this


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=HASH_BYTES)


def check_password_text(password: str) -> None:
    """ValueError when `password` cannot be typed at a client's login (SASL carries it)."""
    try:
        octets = password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a password is UTF-8 text") from None
    if not octets or len(octets) > MAX_PASSWORD:
        raise ValueError(f"a password is 1 to {MAX_PASSWORD} octets of UTF-8")
    if any(c in password for c in "\r\n\0"):
        raise ValueError("a password may not contain CR, LF or NUL")


def hash_password(password: str) -> str:
    """The stored form of `password` with a fresh salt; ValueError when it is unusable."""
    check_password_text(password)
    octets = password.encode("utf-8")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(octets, salt, N, R, P)
    b64 = base64.b64encode
    return f"{SCHEME}${N}${R}${P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored`. With no stored hash (an unknown user) a hash is
    computed all the same, so the time taken does not tell which user names exist."""
    octets = password.encode("utf-8", "surrogateescape")[: MAX_PASSWORD + 1]
    try:
        scheme, n_, r_, p_, salt_, digest_ = (stored or "").split("$")
        n, r, p = int(n_), int(r_), int(p_)
        salt, digest = base64.b64decode(salt_, validate=True), base64.b64decode(digest_)
        if scheme != SCHEME or not 1 < n <= _MAX_N or not 0 < r <= 32 or not 0 < p <= 4:
            raise ValueError(scheme)
    except ValueError:
        _scrypt(octets, b"\0" * SALT_BYTES, N, R, P)  # the same cost as a real check
        return False
    if len(octets) > MAX_PASSWORD:
        _scrypt(b"", salt, n, r, p)
        return False
    return hmac.compare_digest(_scrypt(octets, salt, n, r, p), digest)
