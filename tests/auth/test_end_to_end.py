"""End to end: a signed message passes a gateway that adds a footer, then reaches the host.

The footer breaks the sender's DKIM signature and the gateway's IP is not in the sender's
SPF, so at the host DMARC fails (p=reject). The gateway checked the message before
changing it and ARC-sealed its findings: when the host trusts the gateway as an ARC
sealer, compauth passes with reason 130 and nothing is rejected; an untrusted sealer, or
no trust at all, leaves the DMARC reject in force. All DNS comes from the embedded server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from mxflow.auth.dkim import dkim_sign, verify_dkim
from mxflow.auth.keys import generate_key, load_signing_key
from mxflow.auth.policy import AuthPolicy, SigningConfig
from mxflow.auth.results import format_authentication_results, header_values, strip_our_results
from mxflow.checks.sender_auth import SenderAuthCheck
from mxflow.dns.server import EmbeddedDnsServer
from mxflow.intake.stamp import dkim_sign_outbound, seal_after_checks
from mxflow.mail import Action, CheckResult, MessageContext
from tests.auth.zones import serve_txt

SENDER_IP = "127.77.0.1"
GATEWAY_IP = "127.10.10.1"
ORIGINAL = (
    b"From: Alice <alice@contoso.com>\r\n"
    b"To: Bob <bob@fabrikam.example>\r\n"
    b"Subject: quarterly figures\r\n"
    b"Date: Fri, 27 Nov 2026 06:00:00 +0000\r\n"
    b"Message-ID: <q3@contoso.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"The figures are attached.\r\n"
)
FOOTER = b"-- \r\nScanned by the gateway.\r\n"


@dataclass
class World:
    server: EmbeddedDnsServer
    sender_key: SigningConfig
    gateway_seal: SigningConfig
    rogue_seal: SigningConfig


def signing(domain: str, selector: str, key_type: str = "rsa") -> tuple[SigningConfig, str]:
    pem, record = generate_key(key_type, 1024)  # type: ignore[arg-type]
    return SigningConfig(domain, selector, load_signing_key(pem)), record


@pytest.fixture
async def world() -> AsyncIterator[World]:
    sender, sender_record = signing("contoso.com", "s1", "ed25519")
    gateway, gateway_record = signing("gateway.example", "arc")
    rogue, rogue_record = signing("rogue.example", "arc")
    records: dict[str, str | None] = {
        "contoso.com": f"v=spf1 ip4:{SENDER_IP} -all",
        "_dmarc.contoso.com": "v=DMARC1; p=reject; rua=mailto:dmarc@contoso.com",
        "s1._domainkey.contoso.com": sender_record,
        "arc._domainkey.gateway.example": gateway_record,
        "arc._domainkey.rogue.example": rogue_record,
        "gateway.example": f"v=spf1 ip4:{GATEWAY_IP} -all",
    }
    async with serve_txt(records) as server:
        yield World(server, sender, gateway, rogue)


async def signed_by_sender(world: World) -> bytes:
    key = world.sender_key
    name, value = await dkim_sign(ORIGINAL, key.domain, key.selector, key.key)
    return f"{name}: {value}\r\n".encode() + ORIGINAL


async def through_gateway(
    world: World, raw: bytes, seal: SigningConfig
) -> tuple[bytes, CheckResult]:
    """The gateway's view: check as received, add the footer, then seal what it found."""
    policy = AuthPolicy(authserv_id=f"mx.{seal.domain}", arc_seal=seal)
    check = SenderAuthCheck(policy, world.server.resolver())
    ctx = MessageContext(
        client_ip=SENDER_IP, helo="mail.contoso.com", mail_from="alice@contoso.com", raw=raw
    )
    result = await check.check(ctx)
    modified = raw + FOOTER
    header = format_authentication_results(policy.authserv_id, result.auth_results)
    with_ar = f"Authentication-Results: {header}\r\n".encode() + modified
    arc_set = await seal_after_checks(with_ar, policy, result.auth_results)
    return b"".join(f"{n}: {v}\r\n".encode() for n, v in arc_set) + with_ar, result


async def at_host(world: World, raw: bytes, trusted: tuple[str, ...]) -> CheckResult:
    policy = AuthPolicy(authserv_id="mx.host.example", trusted_arc_sealers=trusted)
    check = SenderAuthCheck(policy, world.server.resolver())
    ctx = MessageContext(
        client_ip=GATEWAY_IP,
        helo="mx.gateway.example",
        mail_from="alice@contoso.com",
        raw=strip_our_results(raw, policy.authserv_id),
    )
    return await check.check(ctx)


def names(result: CheckResult) -> set[str]:
    return {s.name for s in result.symbols}


async def test_gateway_sees_a_fully_authenticated_message(world: World) -> None:
    raw, result = await through_gateway(world, await signed_by_sender(world), world.gateway_seal)
    assert {"SPF_PASS", "DKIM_VALID", "DMARC_PASS", "ARC_NA", "COMPAUTH_PASS"} <= names(result)
    assert result.action is None
    assert raw.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=gateway.example")
    aar = header_values(raw, "ARC-Authentication-Results")[0]
    assert aar.startswith("i=1; mx.gateway.example;")
    assert "dmarc=pass" in aar


async def test_footer_breaks_dkim_and_untrusted_host_rejects(world: World) -> None:
    raw, _ = await through_gateway(world, await signed_by_sender(world), world.gateway_seal)
    result = await at_host(world, raw, trusted=())
    assert {"SPF_FAIL", "DKIM_INVALID", "DMARC_POLICY_REJECT", "ARC_VALID"} <= names(result)
    assert "compauth=fail reason=000" in result.auth_results
    assert result.action is Action.REJECT
    assert "DMARC policy of contoso.com" in result.reason


async def test_trusted_gateway_seal_makes_the_host_pass_it(world: World) -> None:
    raw, _ = await through_gateway(world, await signed_by_sender(world), world.gateway_seal)
    result = await at_host(world, raw, trusted=("gateway.example",))
    assert {"DKIM_INVALID", "ARC_VALID", "COMPAUTH_PASS", "ARC_TRUSTED_OVERRIDE"} <= names(result)
    assert "compauth=pass reason=130" in result.auth_results
    assert any(p.startswith("dmarc=fail") for p in result.auth_results)
    assert result.action is None
    # The failures the trusted sealer vouches for are shown but score nothing.
    assert sum(s.score for s in result.symbols) <= 0
    assert all("trusted ARC sealer" in s.detail for s in result.symbols if s.name == "DKIM_INVALID")


async def test_untrusted_sealer_changes_nothing(world: World) -> None:
    raw, _ = await through_gateway(world, await signed_by_sender(world), world.rogue_seal)
    result = await at_host(world, raw, trusted=("gateway.example",))
    assert "ARC_VALID" in names(result)
    assert "compauth=fail reason=000" in result.auth_results
    assert result.action is Action.REJECT


async def test_tampering_after_the_seal_invalidates_the_chain(world: World) -> None:
    raw, _ = await through_gateway(world, await signed_by_sender(world), world.gateway_seal)
    result = await at_host(world, raw + b"P.S. wire the money.\r\n", trusted=("gateway.example",))
    assert "ARC_INVALID" in names(result)
    assert result.action is Action.REJECT


async def test_forged_results_in_our_name_are_removed(world: World) -> None:
    forged = b"Authentication-Results: mx.host.example; dmarc=pass; compauth=pass reason=100\r\n"
    raw, _ = await through_gateway(world, forged + ORIGINAL, world.gateway_seal)
    stripped = strip_our_results(raw, "mx.host.example")
    assert all(
        not v.startswith("mx.host.example")
        for v in header_values(stripped, "Authentication-Results")
    )
    result = await at_host(world, raw, trusted=())
    assert result.action is Action.REJECT


async def test_quarantine_policy_and_configurable_action(world: World) -> None:
    async with serve_txt(
        {"contoso.com": "v=spf1 -all", "_dmarc.contoso.com": "v=DMARC1; p=quarantine"}
    ) as server:
        ctx = MessageContext(client_ip=SENDER_IP, helo="x", mail_from="a@contoso.com", raw=ORIGINAL)
        honoured = await SenderAuthCheck(AuthPolicy("mx.h"), server.resolver()).check(ctx)
        relaxed = await SenderAuthCheck(
            AuthPolicy("mx.h", dmarc_quarantine=Action.JUNK), server.resolver()
        ).check(ctx)
    assert "DMARC_POLICY_QUARANTINE" in names(honoured)
    assert honoured.action is Action.QUARANTINE
    assert relaxed.action is Action.JUNK


async def test_authenticated_submission_is_not_checked(world: World) -> None:
    ctx = MessageContext(client_ip="127.0.0.1", raw=ORIGINAL, authenticated_user="alice")
    result = await SenderAuthCheck(AuthPolicy("mx.h"), world.server.resolver()).check(ctx)
    assert result.symbols == [] and result.action is None


async def test_outbound_signing_picks_the_author_domain_key(world: World) -> None:
    policy = AuthPolicy("mx.host.example", dkim_sign={"contoso.com": world.sender_key})
    subdomain = ORIGINAL.replace(b"alice@contoso.com", b"alice@mail.contoso.com")
    (header,) = await dkim_sign_outbound(subdomain, policy)
    signed = f"{header[0]}: {header[1]}\r\n".encode() + subdomain
    results = await verify_dkim(signed, world.server.resolver())
    assert [(r.result, r.domain) for r in results] == [("pass", "contoso.com")]
    other = ORIGINAL.replace(b"alice@contoso.com", b"alice@fabrikam.example")
    assert await dkim_sign_outbound(other, policy) == []
