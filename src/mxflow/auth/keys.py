"""DKIM/ARC signing keys: generate, load, and publish as a DNS record.

dkimpy wants RSA keys as PKCS#1 PEM and Ed25519 keys as the base64 32-byte seed (RFC 8463
§4); administrators have PKCS#8 PEM as often. `load_signing_key` accepts all of these and
hands dkimpy the form it wants, so the rest of mxflow never cares which one was on disk.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mxflow.errors import MxflowError

KeyType = Literal["rsa", "ed25519"]


class SigningKeyError(MxflowError):
    """A signing key that cannot be used; the message says which file or value and why."""


@dataclass(frozen=True)
class SigningKey:
    """A private key in dkimpy's form, with its algorithm (`a=` value)."""

    key_type: KeyType
    dkimpy_key: bytes  # PKCS#1 PEM (LF line ends) for RSA, base64 seed for Ed25519

    @property
    def algorithm(self) -> str:
        return "ed25519-sha256" if self.key_type == "ed25519" else "rsa-sha256"


def load_signing_key(data: bytes | str, *, source: str = "key") -> SigningKey:
    """Parse a PEM (PKCS#1 or PKCS#8, RSA or Ed25519) or a base64 Ed25519 seed."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    raw = raw.replace(b"\r\n", b"\n").strip()
    if b"-----BEGIN" in raw:
        try:
            key = serialization.load_pem_private_key(raw + b"\n", password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"{source}: not a usable PEM private key ({exc})") from exc
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 1024:
                raise SigningKeyError(f"{source}: RSA key of {key.key_size} bits; use 1024 or more")
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            return SigningKey("rsa", pem)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            seed = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return SigningKey("ed25519", base64.b64encode(seed))
        raise SigningKeyError(f"{source}: only RSA and Ed25519 keys can sign DKIM")
    try:
        seed = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError(f"{source}: neither PEM nor a base64 Ed25519 seed") from exc
    if len(seed) != 32:
        raise SigningKeyError(f"{source}: an Ed25519 seed is 32 bytes, found {len(seed)}")
    return SigningKey("ed25519", base64.b64encode(seed))


def generate_key(key_type: KeyType = "rsa", bits: int = 2048) -> tuple[bytes, str]:
    """A new private key (PEM, PKCS#8) and its DKIM key record (`v=DKIM1; k=...; p=...`)."""
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if key_type == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    record = f"v=DKIM1; k={key_type}; p={base64.b64encode(public).decode('ascii')}"
    return pem, record


def split_txt(record: str, size: int = 255) -> list[str]:
    """A TXT record's character-strings: each at most 255 octets (RFC 1035 §3.3)."""
    return [record[i : i + size] for i in range(0, len(record), size)] or [""]
