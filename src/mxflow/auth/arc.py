"""ARC (RFC 8617): validate the chain a message arrives with, and seal it after our checks.

Validation uses dkimpy's chain walk with the AMS/AS keys prefetched on the event loop (as
in `mxflow.auth.dkim`) and the crypto in a worker thread. dkimpy answers "no result" for
a chain whose newest seal already says cv=fail; RFC 8617 §5.2 step 2 makes that a failed
chain, so it is reported as cv=fail here.

Sealing is done here rather than by `dkim.arc_sign`, which needs the `authres` package
only to re-read our own Authentication-Results: the node already has them in hand, so
`arc_seal` takes that header value and builds the AAR from it directly. The header and
signature layout is dkimpy's (`standardize=True` gives the ValiMail suite's canonical
form).
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field
from typing import Any

import dkim
import dns.asyncresolver
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import HASH_ALGORITHMS, UnparsableKeyError, parse_pem_private_key

from mxflow.auth.dkim import DEFAULT_SIGNED_HEADERS, DKIMPY_LOGGER, KeyMap, dnsfunc_from, prefetch
from mxflow.auth.dkim import signature_key_names as _key_names
from mxflow.auth.keys import SigningKey, load_signing_key
from mxflow.auth.offload import run_heavy
from mxflow.auth.results import comment, method_result, split_results
from mxflow.auth.txt import TxtLookup, as_txt_lookup
from mxflow.mail import header_section

MAX_INSTANCE = 50  # RFC 8617 §4.2.1


@dataclass(frozen=True)
class ArcSetInfo:
    """One ARC set as validated: who sealed it, what it claimed, whether it verified."""

    instance: int
    seal_domain: str
    seal_selector: str
    signature_domain: str
    cv: str
    aar: str  # ARC-Authentication-Results value (without "i=N;")
    seal_valid: bool
    signature_valid: bool

    @property
    def aar_authserv_id(self) -> str:
        parts = split_results(self.aar)
        return parts[0].split()[0].lower() if parts and parts[0].split() else ""

    def aar_result(self, method: str) -> str | None:
        """The result the sealer recorded for `method` (e.g. "dmarc") in its AAR, if any."""
        return method_result(self.aar, method)


@dataclass(frozen=True)
class ArcResult:
    """Chain validation status (RFC 8617 §4.4): none, pass or fail, with the sets seen."""

    cv: str
    reason: str = ""
    sets: tuple[ArcSetInfo, ...] = field(default_factory=tuple)  # newest first

    @property
    def newest(self) -> ArcSetInfo | None:
        return self.sets[0] if self.sets else None

    def ar_part(self) -> str:
        """The `arc=` Authentication-Results part."""
        text = f"arc={self.cv}"
        newest = self.newest
        if self.cv == "fail" and self.reason:
            text += f" ({comment(self.reason)})"
        elif newest is not None:
            text += f" (i={newest.instance} d={newest.seal_domain})"
        if newest is not None and self.cv == "pass":
            text += f" header.oldest-pass={oldest_pass(self)}"
        return text


def oldest_pass(result: ArcResult) -> int:
    """RFC 8617 §5.2 oldest-pass: 0 when every AMS still validates (they all do here)."""
    oldest = 0
    for info in reversed(result.sets):
        if not info.signature_valid:
            oldest = info.instance + 1
    return oldest


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _strip_instance(aar: str) -> str:
    return re.sub(r"^\s*i\s*=\s*\d+\s*;\s*", "", aar)


def arc_key_names(raw: bytes) -> list[str]:
    return _key_names(raw, b"arc-seal") + _key_names(raw, b"arc-message-signature")


def validate_with_keys(raw: bytes, keys: KeyMap, *, min_key_bits: int = 1024) -> ArcResult:
    """Validate the ARC chain of `raw` against prefetched keys (synchronous)."""
    arc = dkim.ARC(raw, logger=DKIMPY_LOGGER, minkey=min_key_bits)
    try:
        cv, data, reason = arc.verify(dnsfunc=dnsfunc_from(keys))
    except (dkim.DKIMException, IndexError, ValueError) as exc:
        return ArcResult("fail", str(exc))
    sets = tuple(
        ArcSetInfo(
            instance=int(d["instance"]),
            seal_domain=_text(d.get("as-domain")).lower(),
            seal_selector=_text(d.get("as-selector")),
            signature_domain=_text(d.get("ams-domain")).lower(),
            cv=_text(d.get("cv")).lower(),
            aar=_strip_instance(_text(d.get("aar-value"))),
            seal_valid=bool(d.get("as-valid")),
            signature_valid=bool(d.get("ams-valid")),
        )
        for d in data
    )
    if cv is None:  # newest seal says cv=fail: the chain is failed (RFC 8617 §5.2)
        return ArcResult("fail", reason, sets)
    status = cv.decode("ascii").lower()
    return ArcResult(status, "" if status == "pass" else reason, sets)


async def validate_arc(
    raw: bytes,
    resolver: dns.asyncresolver.Resolver | TxtLookup,
    *,
    min_key_bits: int = 1024,
) -> ArcResult:
    """The chain validation status of `raw`: cv=none (no chain), pass or fail."""
    try:
        names = arc_key_names(raw)
    except dkim.DKIMException:
        return ArcResult("fail", "the message header does not parse")
    if not names and not re.search(rb"(?im)^arc-", header_section(raw)):
        return ArcResult("none")
    keys = await prefetch(names, as_txt_lookup(resolver))
    return await run_heavy(len(raw), validate_with_keys, raw, keys, min_key_bits=min_key_bits)


def _chain_status_from(auth_results: str) -> str:
    status = method_result(auth_results, "arc")
    return status if status in {"pass", "fail"} else "none"


def seal_sync(
    raw: bytes,
    *,
    auth_results: str,
    domain: str,
    selector: str,
    key: SigningKey,
    cv: str | None = None,
    headers: tuple[str, ...] | None = None,
    timestamp: int | None = None,
    standardize: bool = False,
) -> list[tuple[str, str]]:
    """`arc_seal` without the thread hop."""
    pk = _sealing_key(key)
    arc = _arc_for_sealing(raw)
    max_instance, with_instance = arc.sorted_arc_headers()
    instance = max_instance + 1 if with_instance else 1
    if instance > MAX_INSTANCE or _chain_failed(with_instance, max_instance):
        return []
    status = _seal_cv(cv, auth_results, instance)
    include = _signed_headers(arc, headers)
    arc_headers = [hv for _, hv in with_instance] if status != "fail" else []
    canon = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    aar_value = f"i={instance}; ".encode() + auth_results.strip().encode() + b"\r\n"
    arc_headers.insert(0, (b"ARC-Authentication-Results", aar_value))
    arc.headers = canon.canonicalize_headers(arc_headers[:1]) + arc.headers

    arc.hasher = HASH_ALGORITHMS[b"rsa-sha256"]
    body_hash = arc.hasher(canon.canonicalize_body(arc.body)).digest()
    stamp = str(timestamp if timestamp is not None else int(time.time())).encode()
    ams_fields = _ams_tags(instance, domain, selector, stamp, include=include, body_hash=body_hash)
    try:
        ams = arc.gen_header(ams_fields, include, canon, b"ARC-Message-Signature", pk, standardize)
        arc_headers.insert(0, (b"ARC-Message-Signature", ams))
        arc.headers = canon.canonicalize_headers(arc_headers[:1]) + arc.headers
        seal_fields = _seal_tags(instance, status, domain, selector, stamp)
        sealed = [n.lower() for n, _ in arc_headers]
        sealed.reverse()
        if status == "fail":
            arc.headers.reverse()
        seal = arc.gen_header(seal_fields, sealed, canon, b"ARC-Seal", pk, standardize)
    except dkim.DKIMException as exc:
        raise ValueError(f"ARC sealing failed: {exc}") from exc

    def value(header: bytes) -> str:
        return header.decode("ascii").strip()

    return [
        ("ARC-Seal", value(seal)),
        ("ARC-Message-Signature", value(ams)),
        ("ARC-Authentication-Results", value(aar_value)),
    ]


async def arc_seal(
    raw: bytes,
    *,
    auth_results: str,
    domain: str,
    selector: str,
    key: SigningKey | bytes | str,
    cv: str | None = None,
    headers: tuple[str, ...] | None = None,
    timestamp: int | None = None,
    standardize: bool = False,
) -> list[tuple[str, str]]:
    """The ARC set to prepend to `raw`, top first: ARC-Seal, ARC-Message-Signature, AAR.

    `auth_results` is the Authentication-Results value this node adds (it starts with our
    authserv-id); its `arc=` result is the chain status unless `cv` is given. Returns []
    when RFC 8617 says not to seal (the chain already failed, or 50 sets exist).
    """
    signing_key = key if isinstance(key, SigningKey) else load_signing_key(key)
    return await run_heavy(
        len(raw),
        seal_sync,
        raw,
        auth_results=auth_results,
        domain=domain,
        selector=selector,
        key=signing_key,
        cv=cv,
        headers=headers,
        timestamp=timestamp,
        standardize=standardize,
    )


def _sealing_key(key: SigningKey) -> Any:
    """The key in dkimpy's form; ARC allows only rsa-sha256, so anything else is refused."""
    if key.key_type != "rsa":
        raise ValueError("ARC seals are rsa-sha256 only (RFC 8617 §4.1.3): use an RSA key")
    try:
        return parse_pem_private_key(key.dkimpy_key)
    except UnparsableKeyError as exc:
        raise ValueError(f"ARC sealing key: {exc}") from exc


def _arc_for_sealing(raw: bytes) -> dkim.ARC:
    """dkimpy's view of the message, set never to sign Authentication-Results (RFC 8617
    §4.1.2: downstream ADMDs may delete them; the AAR carries ours)."""
    try:
        arc = dkim.ARC(raw, logger=DKIMPY_LOGGER, signature_algorithm=b"rsa-sha256")
    except dkim.DKIMException as exc:
        raise ValueError("cannot seal: the message header does not parse") from exc
    arc.add_should_not((b"authentication-results",))
    return arc


def _chain_failed(with_instance: list[tuple[int, Any]], max_instance: int) -> bool:
    """Whether the newest seal already says cv=fail: such a chain is not sealed again
    (RFC 8617 §5.1.1)."""
    newest_seal = [v for i, (n, v) in with_instance if i == max_instance and n == b"arc-seal"]
    return bool(newest_seal and re.search(rb"(?i)(^|;)\s*cv\s*=\s*fail", newest_seal[0]))


def _seal_cv(cv: str | None, auth_results: str, instance: int) -> str:
    """The cv= of our seal: none for the first set, else the status we validated (`cv`, or
    the arc= result in our Authentication-Results); an unvalidated chain gets fail."""
    status = (cv or _chain_status_from(auth_results)).lower()
    if instance == 1:
        status = "none"
    elif status == "none":
        status = "fail"  # an existing chain we did not validate cannot be vouched for
    return status


def _signed_headers(arc: dkim.ARC, headers: tuple[str, ...] | None) -> tuple[bytes, ...]:
    """The header names the AMS signs: `headers`, else the DKIM defaults the message has
    (From always); names ARC must not sign are refused."""
    present = {n.lower().decode("ascii", "replace") for n, _ in arc.headers}
    wanted = headers or tuple(h for h in DEFAULT_SIGNED_HEADERS if h in present or h == "from")
    include = tuple(h.lower().encode() for h in wanted)
    for name in include:
        if name in arc.should_not_sign:
            raise ValueError(f"ARC-Message-Signature must not sign {name.decode()}")
    return include


def _ams_tags(
    instance: int,
    domain: str,
    selector: str,
    stamp: bytes,
    *,
    include: tuple[bytes, ...],
    body_hash: bytes,
) -> list[tuple[bytes, bytes]]:
    """The ARC-Message-Signature tags, in dkimpy's order, with `b=` a placeholder."""
    return [
        (b"i", str(instance).encode()),
        (b"a", b"rsa-sha256"),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain.encode()),
        (b"s", selector.encode()),
        (b"t", stamp),
        (b"h", b" : ".join(include)),
        (b"bh", base64.b64encode(body_hash)),
        (b"b", b"0" * 60),
    ]


def _seal_tags(
    instance: int, status: str, domain: str, selector: str, stamp: bytes
) -> list[tuple[bytes, bytes]]:
    """The ARC-Seal tags, in dkimpy's order, with `b=` a placeholder."""
    return [
        (b"i", str(instance).encode()),
        (b"cv", status.encode()),
        (b"a", b"rsa-sha256"),
        (b"d", domain.encode()),
        (b"s", selector.encode()),
        (b"t", stamp),
        (b"b", b"0" * 60),
    ]
