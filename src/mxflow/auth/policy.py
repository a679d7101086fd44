"""A node's `[auth]` configuration: who we are in Authentication-Results, whose ARC seals
we trust, how far DMARC is honoured, and the keys we seal and sign with.

    [auth]
    authserv_id = "mx.gateway.example"          # required
    trusted_arc_sealers = ["gateway.example"]   # host role: the gateway's sealing domain
    dmarc_reject = "reject"       # what DMARC p=reject does: reject | quarantine | junk | ignore
    dmarc_quarantine = "quarantine"  # what p=quarantine does: quarantine | junk | ignore
    min_key_bits = 1024           # shorter RSA keys give dkim=policy (RFC 8301)

    [auth.arc_seal]               # seal what this node checked (gateway role)
    domain = "gateway.example"
    selector = "arc2026"
    key_file = "keys/arc.pem"     # relative to the config file

    [auth.dkim_sign."contoso.com"]  # sign outbound mail of this domain
    selector = "s1"
    key_file = "keys/contoso.pem"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mxflow.auth.keys import SigningKey, SigningKeyError, load_signing_key
from mxflow.errors import ConfigError
from mxflow.mail import Action

DMARC_REJECT_ACTIONS = {
    "reject": Action.REJECT,
    "quarantine": Action.QUARANTINE,
    "junk": Action.JUNK,
    "ignore": None,
}
DMARC_QUARANTINE_ACTIONS = {
    "quarantine": Action.QUARANTINE,
    "junk": Action.JUNK,
    "ignore": None,
}


@dataclass(frozen=True)
class SigningConfig:
    """A domain, selector and private key to DKIM-sign or ARC-seal with."""

    domain: str
    selector: str
    key: SigningKey
    key_file: str = ""


@dataclass(frozen=True)
class AuthPolicy:
    authserv_id: str
    trusted_arc_sealers: tuple[str, ...] = ()
    dmarc_reject: Action | None = Action.REJECT
    dmarc_quarantine: Action | None = Action.QUARANTINE
    min_key_bits: int = 1024
    arc_seal: SigningConfig | None = None
    dkim_sign: Mapping[str, SigningConfig] = field(default_factory=dict)

    def signing_for(self, domain: str) -> SigningConfig | None:
        """The DKIM signing key for mail from `domain`, if this node signs for it."""
        return self.dkim_sign.get(domain.lower().rstrip("."))


_TOP_KEYS = {
    "authserv_id",
    "trusted_arc_sealers",
    "dmarc_reject",
    "dmarc_quarantine",
    "min_key_bits",
    "arc_seal",
    "dkim_sign",
}


def _domain(value: object, file: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip() or " " in value.strip():
        raise ConfigError(file, key, value, "a domain name such as 'gateway.example'")
    return value.strip().lower().rstrip(".")


def _signing(table: object, file: str, key: str, domain: str | None, base: Path) -> SigningConfig:
    if not isinstance(table, dict):
        raise ConfigError(file, key, table, "a table with selector and key_file")
    allowed = {"selector", "key_file"} if domain else {"domain", "selector", "key_file"}
    for name in table:
        if name not in allowed:
            raise ConfigError(file, f"{key}.{name}", table[name], f"one of {sorted(allowed)}")
    signing_domain = domain or _domain(table.get("domain"), file, f"{key}.domain")
    selector = table.get("selector")
    if not isinstance(selector, str) or not selector.strip():
        raise ConfigError(file, f"{key}.selector", selector, "a DKIM selector such as 's1'")
    key_file = table.get("key_file")
    if not isinstance(key_file, str) or not key_file:
        raise ConfigError(file, f"{key}.key_file", key_file, "the path of a private key file")
    path = Path(key_file)
    if not path.is_absolute():
        path = base / path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            file, f"{key}.key_file", key_file, f"a readable key file ({exc.strerror})"
        ) from exc
    try:
        signing_key = load_signing_key(data, source=str(path))
    except SigningKeyError as exc:
        raise ConfigError(file, f"{key}.key_file", key_file, f"a usable key: {exc}") from exc
    return SigningConfig(signing_domain, selector.strip(), signing_key, str(path))


def parse_auth_section(table: dict[str, object], file: str) -> AuthPolicy:
    """The `[auth]` table of a node's TOML config as an AuthPolicy; ConfigError if wrong."""
    if not isinstance(table, dict):
        raise ConfigError(file, "auth", table, "a table")
    for name, value in table.items():
        if name not in _TOP_KEYS:
            raise ConfigError(file, f"auth.{name}", value, f"one of {sorted(_TOP_KEYS)}")
    authserv = table.get("authserv_id")
    if (
        not isinstance(authserv, str)
        or not authserv.strip()
        or any(c in authserv for c in ' ;()"\\')
    ):
        raise ConfigError(file, "auth.authserv_id", authserv, "this node's name, e.g. mx.example")
    sealers_value = table.get("trusted_arc_sealers", [])
    if not isinstance(sealers_value, list):
        raise ConfigError(file, "auth.trusted_arc_sealers", sealers_value, "a list of domains")
    sealers = tuple(
        _domain(v, file, f"auth.trusted_arc_sealers[{i}]") for i, v in enumerate(sealers_value)
    )
    reject_word = table.get("dmarc_reject", "reject")
    if reject_word not in DMARC_REJECT_ACTIONS:
        raise ConfigError(
            file, "auth.dmarc_reject", reject_word, f"one of {list(DMARC_REJECT_ACTIONS)}"
        )
    quarantine_word = table.get("dmarc_quarantine", "quarantine")
    if quarantine_word not in DMARC_QUARANTINE_ACTIONS:
        raise ConfigError(
            file,
            "auth.dmarc_quarantine",
            quarantine_word,
            f"one of {list(DMARC_QUARANTINE_ACTIONS)}",
        )
    min_bits = table.get("min_key_bits", 1024)
    if not isinstance(min_bits, int) or isinstance(min_bits, bool) or not 512 <= min_bits <= 8192:
        raise ConfigError(file, "auth.min_key_bits", min_bits, "an integer from 512 to 8192")
    base = Path(file).parent
    arc_seal = None
    if "arc_seal" in table:
        arc_seal = _signing(table["arc_seal"], file, "auth.arc_seal", None, base)
        if arc_seal.key.key_type != "rsa":
            raise ConfigError(
                file, "auth.arc_seal.key_file", arc_seal.key_file, "an RSA key (ARC is RSA only)"
            )
    signers: dict[str, SigningConfig] = {}
    dkim_table = table.get("dkim_sign", {})
    if not isinstance(dkim_table, dict):
        raise ConfigError(file, "auth.dkim_sign", dkim_table, "a table of domain = {...}")
    for domain_name, entry in dkim_table.items():
        domain = _domain(domain_name, file, f"auth.dkim_sign.{domain_name}")
        signers[domain] = _signing(entry, file, f"auth.dkim_sign.{domain_name}", domain, base)
    return AuthPolicy(
        authserv_id=authserv.strip(),
        trusted_arc_sealers=sealers,
        dmarc_reject=DMARC_REJECT_ACTIONS[str(reject_word)],
        dmarc_quarantine=DMARC_QUARANTINE_ACTIONS[str(quarantine_word)],
        min_key_bits=min_bits,
        arc_seal=arc_seal,
        dkim_sign=signers,
    )
