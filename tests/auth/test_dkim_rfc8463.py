"""dkimpy's RFC 8463 (Ed25519) and RSA vectors, and signing round trips.

Key records follow dkimpy's own tests: `brisbane._domainkey.football.example.com` is the
RFC 8463 Appendix A key; `test._domainkey.football.example.com` is `test.txt`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mxflow.auth.dkim import dkim_sign, verify_dkim
from mxflow.auth.keys import SigningKeyError, generate_key, load_signing_key
from tests.auth.zones import DATA, serve_txt

VECTORS = DATA / "dkimpy"
BRISBANE = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def record(name: str) -> str:
    return (VECTORS / name).read_text(encoding="ascii").strip()


def message(name: str) -> bytes:
    data = (VECTORS / name).read_bytes()
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def zone(test_key: str = "test.txt") -> dict[str, str | None]:
    return {
        "brisbane._domainkey.football.example.com": BRISBANE,
        "test._domainkey.football.example.com": record(test_key),
        "sed._domainkey.test.ex": record("eximtest.dns"),
    }


async def test_rfc8463_appendix_a_both_signatures_pass() -> None:
    async with serve_txt(zone()) as server:
        results = await verify_dkim(message("rfc6376.signed.msg"), server.resolver())
    assert [(r.result, r.algorithm, r.selector) for r in results] == [
        ("pass", "ed25519-sha256", "brisbane"),
        ("pass", "rsa-sha256", "test"),
    ]
    assert results[0].key_bits == 256
    assert results[0].ar_part().startswith("dkim=pass (256-bit key) header.d=football.example.com")


async def test_exim_prototype_ed25519_signature_passes() -> None:
    async with serve_txt(zone()) as server:
        results = await verify_dkim(message("ed25519test2.msg"), server.resolver())
    assert [(r.result, r.domain) for r in results] == [("pass", "test.ex")]


async def test_rsa_signature_fails_against_corrupted_key() -> None:
    async with serve_txt(zone("test_bad.txt")) as server:
        results = await verify_dkim(message("rfc6376.signed.rsa.msg"), server.resolver())
    assert len(results) == 1
    assert results[0].result in {"fail", "permerror"}


@pytest.mark.parametrize("name", ["rfc6376.signed.no_t.msg", "rfc6376.w1258.msg"])
async def test_upstream_non_verifying_messages(name: str) -> None:
    async with serve_txt(zone()) as server:
        results = await verify_dkim(message(name), server.resolver())
    assert all(r.result != "pass" for r in results)


@pytest.mark.parametrize(
    ("key_record", "expected"),
    [("test2.txt", "pass"), ("badversion.txt", "permerror"), ("badk.txt", "permerror")],
)
async def test_key_record_variants(key_record: str, expected: str) -> None:
    """No k= means RSA (RFC 6376 §3.6.1); a bad v= or an unknown k= is a permerror."""
    async with serve_txt(zone(key_record)) as server:
        results = await verify_dkim(message("rfc6376.signed.rsa.msg"), server.resolver())
    assert [r.result for r in results] == [expected]


async def test_ed25519_key_on_rsa_signature_is_permerror() -> None:
    records = zone()
    records["test._domainkey.football.example.com"] = BRISBANE
    async with serve_txt(records) as server:
        results = await verify_dkim(message("rfc6376.signed.rsa.msg"), server.resolver())
    assert [r.result for r in results] == ["permerror"]


async def test_missing_key_is_permerror() -> None:
    async with serve_txt({"other.example": "x"}) as server:
        results = await verify_dkim(message("rfc6376.signed.msg"), server.resolver())
    assert [r.result for r in results] == ["permerror", "permerror"]
    assert "no key" in results[0].reason


@pytest.mark.parametrize(
    ("key_file", "selector", "published"),
    [
        ("rfc8032_7_1.key", "brisbane", BRISBANE),
        ("test.private", "test", None),
        ("2048_testkey_PKCS8.key", "pkcs8", "2048_testkey_PKCS8.key.pub.txt"),
    ],
)
async def test_sign_then_verify(key_file: str, selector: str, published: str | None) -> None:
    key = load_signing_key((VECTORS / key_file).read_bytes(), source=key_file)
    raw = message("rfc6376.msg")
    name, value = await dkim_sign(raw, "football.example.com", selector, key)
    assert name == "DKIM-Signature"
    assert f"a={key.algorithm}" in value.replace("\r\n", "")
    records = zone()
    if published and published.endswith(".txt"):
        records[f"{selector}._domainkey.football.example.com"] = record(published)
    signed = f"{name}: {value}\r\n".encode() + raw
    async with serve_txt(records) as server:
        results = await verify_dkim(signed, server.resolver())
    assert [(r.result, r.selector) for r in results] == [("pass", selector)]


async def test_signature_breaks_when_the_body_changes() -> None:
    key = load_signing_key((VECTORS / "rfc8032_7_1.key").read_bytes())
    raw = message("rfc6376.msg")
    name, value = await dkim_sign(raw, "football.example.com", "brisbane", key)
    tampered = f"{name}: {value}\r\n".encode() + raw + b"--\r\nA footer.\r\n"
    async with serve_txt(zone()) as server:
        results = await verify_dkim(tampered, server.resolver())
    assert [r.result for r in results] == ["fail"]
    assert "body hash" in results[0].reason


@pytest.mark.parametrize("key_type", ["rsa", "ed25519"])
async def test_generated_keys_publish_matching_records(key_type: str) -> None:
    pem, txt = generate_key(key_type, 1024)  # type: ignore[arg-type]
    key = load_signing_key(pem)
    assert key.key_type == key_type
    raw = message("rfc6376.msg")
    name, value = await dkim_sign(raw, "football.example.com", "gen", key)
    async with serve_txt({"gen._domainkey.football.example.com": txt}) as server:
        results = await verify_dkim(f"{name}: {value}\r\n".encode() + raw, server.resolver())
    assert [r.result for r in results] == ["pass"]


@pytest.mark.parametrize("data", [b"not a key", b"-----BEGIN PRIVATE KEY-----\nxx\n-----END"])
def test_unusable_keys_are_clear_errors(data: bytes, tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match=r"k\.pem"):
        load_signing_key(data, source=str(tmp_path / "k.pem"))


async def test_verification_does_not_block_the_event_loop() -> None:
    """A 10 MB body is canonicalised off the loop (in a process: one regex pass over it
    would hold the GIL for half a second); the loop keeps answering meanwhile."""
    key = load_signing_key((VECTORS / "test.private").read_bytes())
    lines = (b"line %d of a large attachment  \t with   spaces\r\n" % i for i in range(200000))
    raw = message("rfc6376.msg") + b"".join(lines)
    name, value = await dkim_sign(raw, "football.example.com", "test", key)
    signed = f"{name}: {value}\r\n".encode() + raw
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.002)
            gaps.append(loop.time() - last)
            last = loop.time()

    async with serve_txt(zone()) as server:
        beat = asyncio.create_task(heartbeat())
        results = await verify_dkim(signed, server.resolver())
        done.set()
        await beat
    assert [r.result for r in results] == ["pass"]
    assert max(gaps) < 0.3, max(gaps)
