"""DKIM (RFC 6376, RFC 8463 Ed25519): verify every signature, and sign.

Built on dkimpy. dkimpy asks for keys through a synchronous DNS callback, which would
block the event loop, so verification runs in two steps: the key TXT records of every
signature are fetched concurrently on the loop first, then dkimpy runs in a worker thread
(canonicalising a large body and RSA arithmetic in pure Python are not free) and reads
the keys from that prefetched map.

dkimpy's own `verify()` folds every problem into False; here each signature gets an
RFC 8601 result instead:

* pass — verified; fail — the body hash or the signature does not match;
* policy — verified but refused by local policy (RSA key below `min_key_bits`, rsa-sha1
  when `allow_sha1` is off: RFC 8301);
* neutral — a signature this verifier does not implement (unknown a=, c=, q= or v=);
* permerror — a broken signature or key record, or no key at all;
* temperror — the key lookup failed temporarily.

The key-record checks dkimpy skips are done here: s= (service types), h= (hash
algorithms), t=s (i= must equal d=), k= against a=, and the RFC 4871 g= granularity that
older keys still carry.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import re
from dataclasses import dataclass
from typing import Any

import dkim
import dkim.util
import dns.asyncresolver

from mxflow.auth.keys import SigningKey, load_signing_key
from mxflow.auth.offload import run_heavy
from mxflow.auth.results import comment
from mxflow.auth.txt import DnsTempError, TxtAnswer, TxtLookup, TxtStatus, as_txt_lookup
from mxflow.errors import MxflowError
from mxflow.mail import header_section

DKIMPY_LOGGER = logging.getLogger("mxflow.auth.dkimpy")
DKIMPY_LOGGER.addHandler(logging.NullHandler())
DKIMPY_LOGGER.propagate = False

RESULTS = ("pass", "fail", "neutral", "policy", "temperror", "permerror")


@dataclass(frozen=True)
class DkimSignatureResult:
    """The outcome for one DKIM-Signature header, with what Authentication-Results shows."""

    result: str
    domain: str = ""
    selector: str = ""
    identity: str = ""
    algorithm: str = ""
    reason: str = ""
    key_bits: int = 0
    b_prefix: str = ""

    def ar_part(self) -> str:
        """This signature as an Authentication-Results method result (RFC 8601 §2.7.1)."""
        text = f"dkim={self.result}"
        if self.reason and self.result != "pass":
            text += f" ({comment(self.reason)})"
        elif self.key_bits:
            text += f" ({self.key_bits}-bit key)"
        props = []
        if self.domain:
            props.append(f"header.d={self.domain}")
        if self.selector:
            props.append(f"header.s={self.selector}")
        if self.identity:
            props.append(f"header.i={self.identity}")
        if self.algorithm:
            props.append(f"header.a={self.algorithm}")
        if self.b_prefix:
            props.append(f"header.b={self.b_prefix}")
        return " ".join([text, *props])


def _text(value: bytes | None) -> str:
    return value.decode("utf-8", "replace") if value else ""


_SIGNATURE_FIELD = re.compile(rb"(?im)^dkim-signature[ \t]*:")


def key_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}".lower().rstrip(".")


def signature_key_names(raw: bytes, header: bytes = b"dkim-signature") -> list[str]:
    """The key names (`s._domainkey.d`) the signatures in `raw` need; bad ones are skipped.

    Only the header block is parsed: this runs on the event loop.
    """
    end = re.search(rb"\r?\n\r?\n", raw)
    try:
        headers, _ = dkim.rfc822_parse(raw[: end.end()] if end else raw)
    except dkim.MessageFormatError:  # a header block dkimpy cannot read (fuzz finding)
        return []
    names: list[str] = []
    for name, value in headers:
        if name.lower() != header:
            continue
        try:
            tags = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList:
            continue
        if b"s" in tags and b"d" in tags:
            names.append(key_name(_text(tags[b"s"]), _text(tags[b"d"])))
    return names


KeyMap = dict[str, TxtAnswer | DnsTempError]


async def prefetch(names: list[str], lookup: TxtLookup) -> KeyMap:
    """Fetch every TXT record in `names` concurrently; temporary failures are kept."""
    unique = sorted(set(names))

    async def one(name: str) -> TxtAnswer | DnsTempError:
        try:
            return await lookup.txt(name)
        except DnsTempError as exc:
            return exc

    answers = await asyncio.gather(*(one(n) for n in unique))
    return dict(zip(unique, answers, strict=True))


class _KeyProblem(MxflowError):
    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


def key_record(keys: KeyMap, name: str) -> bytes:
    """The one key record at `name`, or a _KeyProblem naming the DKIM result."""
    answer = keys.get(name.lower().rstrip("."))
    if answer is None:
        raise _KeyProblem("temperror", f"key {name} was not fetched")
    if isinstance(answer, DnsTempError):
        raise _KeyProblem("temperror", f"key lookup failed: {answer}")
    if answer.status is not TxtStatus.FOUND or not answer.records:
        raise _KeyProblem("permerror", f"no key for signature ({name})")
    return answer.records[0].encode("utf-8", "surrogateescape")


def dnsfunc_from(keys: KeyMap) -> Any:
    """A dkimpy DNS callback that answers from the prefetched map, never from the network."""

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            return key_record(keys, text)
        except _KeyProblem as exc:
            if exc.result == "temperror":
                raise dkim.DnsTimeoutError(exc.reason) from None
            return None

    return dnsfunc


def _tag_list(value: bytes) -> list[bytes]:
    return [v.strip().lower() for v in value.split(b":")]


def _check_key_type(ktag: bytes | None, sig: dict[bytes, bytes]) -> None:
    algorithm = sig.get(b"a", b"").lower()
    if ktag is None or not algorithm.startswith(ktag + b"-"):
        raise _KeyProblem("permerror", f"key type k={_text(ktag)} does not match a=")


def _check_key_tags(record: bytes, sig: dict[bytes, bytes]) -> bytes:
    """The key-record constraints dkimpy does not enforce (RFC 6376 §3.6.1, RFC 4871 g=).

    Returns the record without s=, which these checks settle (dkimpy compares it as one
    value, not as the colon-separated list it is).
    """
    try:
        tags = dkim.util.parse_tag_value(record)
    except dkim.util.InvalidTagValueList as exc:
        raise _KeyProblem("permerror", f"key record syntax: {exc}") from exc
    algorithm = sig.get(b"a", b"").lower()
    if b"s" in tags:
        services = _tag_list(tags[b"s"])
        if b"*" not in services and b"email" not in services:
            raise _KeyProblem("permerror", f"key service type s={_text(tags[b's'])}")
    if b"h" in tags:
        hashes = _tag_list(tags[b"h"])
        if algorithm.split(b"-", 1)[-1] not in hashes:
            raise _KeyProblem("permerror", f"key does not allow h={_text(algorithm)}")
    domain = sig.get(b"d", b"").lower()
    identity = _qp_decode(sig.get(b"i", b"@" + domain))
    local, _, idomain = identity.rpartition(b"@")
    if b"t" in tags and b"s" in _tag_list(tags[b"t"]) and idomain.lower() != domain:
        raise _KeyProblem("permerror", "key has t=s but i= is a subdomain of d=")
    if b"g" in tags and not _granularity_matches(tags[b"g"], local):
        raise _KeyProblem("permerror", "key granularity g= does not match i=")
    return b"; ".join(k + b"=" + v for k, v in tags.items() if k != b"s")


def _as_validated(sig: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The tags as dkimpy's field check should see them: i= decoded from
    quoted-printable, q= reduced to dns/txt when the colon-separated list offers it."""
    check = dict(sig)
    if b"i" in check:
        check[b"i"] = _qp_decode(check[b"i"])
    if b"q" in check and b"dns/txt" in _tag_list(check[b"q"]):
        check[b"q"] = b"dns/txt"
    return check


def _qp_decode(value: bytes) -> bytes:
    return re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), value)


def _granularity_matches(pattern: bytes, local: bytes) -> bool:
    """RFC 4871 §3.6.1 g=: empty matches nothing, one '*' is a wildcard, case-sensitive."""
    if pattern == b"":
        return False
    if b"*" not in pattern:
        return pattern == local
    head, _, tail = pattern.partition(b"*")
    return local.startswith(head) and local.endswith(tail) and len(local) >= len(head + tail)


def _readable(reason: str) -> str:
    """dkimpy's messages without bytes reprs, and a body-hash mismatch without the hashes."""
    if reason.startswith("body hash mismatch"):
        return "body hash mismatch: the body changed after signing"
    return re.sub(r"b'([^']*)'", r"\1", reason)


_UNSUPPORTED = re.compile(
    r"unknown signature algorithm|q= value is not|v= value is not|invalid c= value"
)


def _verify_one(
    raw: bytes, idx: int, keys: KeyMap, *, min_key_bits: int, allow_sha1: bool
) -> DkimSignatureResult:
    """Verify signature number `idx`; synchronous (runs in a worker thread)."""
    d = dkim.DKIM(raw, logger=DKIMPY_LOGGER, minkey=0)
    sigheaders = [(n, v) for n, v in d.headers if n.lower() == b"dkim-signature"]
    try:
        tags = dkim.util.parse_tag_value(sigheaders[idx][1])
    except dkim.util.InvalidTagValueList as exc:
        return DkimSignatureResult("permerror", reason=f"signature syntax: {exc}")
    domain = _text(tags.get(b"d")).lower()
    selector = _text(tags.get(b"s"))
    algorithm = _text(tags.get(b"a")).lower()
    identity = _text(tags.get(b"i"))
    b_prefix = re.sub(r"\s+", "", _text(tags.get(b"b")))[:8]

    def result(verdict: str, reason: str = "", bits: int = 0) -> DkimSignatureResult:
        return DkimSignatureResult(
            verdict, domain, selector, identity, algorithm, _readable(reason), bits, b_prefix
        )

    sig = dict(tags)
    try:
        dkim.validate_signature_fields(_as_validated(sig))
    except dkim.DKIMException as exc:
        reason = str(exc)
        return result("neutral" if _UNSUPPORTED.search(reason) else "permerror", reason)
    include_headers = [x.lower() for x in re.split(rb"\s*:\s*", sig[b"h"])]
    if b"from" not in include_headers:
        return result("permerror", "From is not signed (h= lacks from)")
    name = key_name(selector, domain)
    try:
        record = key_record(keys, name)
        record = _check_key_tags(record, sig)
        pk, keysize, ktag, seqtlsrpt = dkim.evaluate_pk(name.encode(), record)
        _check_key_type(ktag, sig)
    except _KeyProblem as exc:
        return result(exc.result, exc.reason)
    except (dkim.DKIMException, binascii.Error, ValueError) as exc:
        return result("permerror", f"key record: {exc}")
    d.pk, d.keysize, d.ktag, d.seqtlsrpt = pk, keysize, ktag, seqtlsrpt
    try:
        ok = d.verify_sig_process(sig, include_headers, sigheaders[idx], None)
    except dkim.ValidationError as exc:
        reason = str(exc)
        return result("fail" if "body hash" in reason else "permerror", reason, keysize or 0)
    except dkim.DKIMException as exc:
        return result("permerror", str(exc), keysize or 0)
    if not ok:
        return result("fail", "signature did not verify", keysize or 0)
    if ktag == b"rsa" and (keysize or 0) < min_key_bits:
        return result("policy", f"RSA key of {keysize} bits is too short", keysize or 0)
    if algorithm == "rsa-sha1" and not allow_sha1:
        return result("policy", "rsa-sha1 is not accepted (RFC 8301)", keysize or 0)
    return result("pass", "", keysize or 0)


def verify_with_keys(
    raw: bytes, keys: KeyMap, *, min_key_bits: int = 1024, allow_sha1: bool = False
) -> list[DkimSignatureResult]:
    """Every DKIM-Signature of `raw`, top to bottom, against prefetched keys (synchronous)."""
    headers, _ = dkim.rfc822_parse(raw)
    count = sum(1 for n, _ in headers if n.lower() == b"dkim-signature")
    return [
        _verify_one(raw, i, keys, min_key_bits=min_key_bits, allow_sha1=allow_sha1)
        for i in range(count)
    ]


async def verify_dkim(
    raw: bytes,
    resolver: dns.asyncresolver.Resolver | TxtLookup,
    *,
    min_key_bits: int = 1024,
    allow_sha1: bool = False,
) -> list[DkimSignatureResult]:
    """Verify every DKIM signature of `raw` (an empty list: the message is unsigned)."""
    try:
        names = signature_key_names(raw)
    except dkim.DKIMException:
        return [DkimSignatureResult("permerror", reason="the message header does not parse")]
    if not names and not _SIGNATURE_FIELD.search(header_section(raw)):
        return []  # unsigned (most mail): no thread hop, no second parse
    keys = await prefetch(names, as_txt_lookup(resolver))
    return await run_heavy(
        len(raw), verify_with_keys, raw, keys, min_key_bits=min_key_bits, allow_sha1=allow_sha1
    )


DEFAULT_SIGNED_HEADERS = (
    "from",
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)


def sign_sync(
    raw: bytes,
    domain: str,
    selector: str,
    key: SigningKey,
    *,
    headers: tuple[str, ...] | None = None,
) -> tuple[str, str]:
    """`dkim_sign` without the thread hop; relaxed/relaxed, From signed twice (frozen)."""
    try:
        signer = dkim.DKIM(raw, logger=DKIMPY_LOGGER, signature_algorithm=key.algorithm.encode())
    except dkim.DKIMException as exc:
        raise ValueError("cannot sign: the message header does not parse") from exc
    present = {n.lower().decode("ascii", "replace") for n, _ in signer.headers}
    wanted = headers or tuple(h for h in DEFAULT_SIGNED_HEADERS if h in present or h == "from")
    try:
        line = signer.sign(
            selector.encode(),
            domain.encode(),
            key.dkimpy_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[h.encode() for h in wanted],
        )
    except dkim.DKIMException as exc:
        raise ValueError(f"DKIM signing failed: {exc}") from exc
    name, _, value = line.decode("ascii").partition(":")
    return name, value.strip()


async def dkim_sign(
    raw: bytes,
    domain: str,
    selector: str,
    key: SigningKey | bytes | str,
    *,
    headers: tuple[str, ...] | None = None,
) -> tuple[str, str]:
    """A DKIM-Signature for `raw` as (name, value) to prepend; value may hold CRLF folds."""
    signing_key = key if isinstance(key, SigningKey) else load_signing_key(key)
    return await run_heavy(len(raw), sign_sync, raw, domain, selector, signing_key, headers=headers)
