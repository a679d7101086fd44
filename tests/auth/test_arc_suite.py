"""The ValiMail ARC test suite (RFC 8617): 171 validation and 17 signing cases.

Each scenario's key records are served by the embedded DNS server. Three validation
cases expect an empty cv (the newest seal already says cv=fail, "chain terminated"): RFC
8617 §5.2 step 2 makes that a failed chain, which is what mxflow reports.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from mxflow.auth.arc import arc_seal, validate_arc
from mxflow.auth.results import authserv_id, header_values, results_of
from tests.auth.zones import DATA, crlf, serve_txt


def scenarios(name: str) -> list[dict[str, Any]]:
    with (DATA / "arc" / name).open(encoding="utf-8") as handle:
        return list(yaml.safe_load_all(handle))


VALIDATION = scenarios("arc-draft-validation-tests.yml")
SIGNING = scenarios("arc-draft-sign-tests.yml")


def expected_cv(value: object) -> str:
    return (str(value).strip() or "fail").lower()


def test_suite_sizes() -> None:
    assert sum(len(s["tests"]) for s in VALIDATION) == 171
    assert sum(len(s["tests"]) for s in SIGNING) == 17


@pytest.mark.parametrize("scenario", VALIDATION, ids=[s["description"] for s in VALIDATION])
async def test_validation(scenario: dict[str, Any]) -> None:
    mismatches = []
    async with serve_txt(scenario["txt-records"]) as server:
        resolver = server.resolver()
        for name, case in scenario["tests"].items():
            result = await validate_arc(crlf(case["message"]), resolver)
            if result.cv != expected_cv(case["cv"]):
                mismatches.append((name, expected_cv(case["cv"]), result.cv, result.reason))
    assert mismatches == []


def _no_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


@pytest.mark.parametrize("scenario", SIGNING, ids=[s["description"] for s in SIGNING])
async def test_signing(scenario: dict[str, Any]) -> None:
    """Sealing reproduces the suite's AS, AMS and AAR byte for byte (modulo folding)."""
    mismatches = []
    for name, case in scenario["tests"].items():
        raw = crlf(case["message"])
        srv_id = case["srv-id"]
        parts = [
            part
            for value in header_values(raw, "Authentication-Results")
            if authserv_id(value) == srv_id.lower()
            for part in results_of(value)
        ]
        sealed = dict(
            await arc_seal(
                raw,
                auth_results=f"{srv_id}; " + ";\r\n ".join(parts),
                domain=scenario["domain"],
                selector=scenario["sel"],
                key=scenario["privatekey"],
                headers=tuple(case["sig-headers"].split(":")),
                timestamp=int(case["t"]),
                standardize=True,
            )
        )
        for header, key in (
            ("ARC-Seal", "AS"),
            ("ARC-Message-Signature", "AMS"),
            ("ARC-Authentication-Results", "AAR"),
        ):
            if _no_space(sealed.get(header, "")) != _no_space(case[key]):
                mismatches.append((name, header))
    assert mismatches == []


async def test_sealed_message_validates() -> None:
    """What we seal, we (and the next hop) validate: i=1 cv=none, then i=2 cv=pass."""
    scenario = SIGNING[0]
    case = next(iter(scenario["tests"].values()))
    raw = crlf(case["message"])
    async with serve_txt(scenario["txt-records"]) as server:
        resolver = server.resolver()
        for instance in (1, 2):
            chain = await validate_arc(raw, resolver)
            assert chain.cv == ("none" if instance == 1 else "pass")
            headers = await arc_seal(
                raw,
                auth_results=f"lists.example.org; arc={chain.cv}; dmarc=pass",
                domain=scenario["domain"],
                selector=scenario["sel"],
                key=scenario["privatekey"],
            )
            assert headers[0][0] == "ARC-Seal"
            assert f"cv={chain.cv}" in headers[0][1]
            raw = b"".join(f"{n}: {v}\r\n".encode() for n, v in headers) + raw
        final = await validate_arc(raw, resolver)
        assert final.cv == "pass"
        assert [s.instance for s in final.sets] == [2, 1]
        assert final.sets[0].aar_result("dmarc") == "pass"


async def test_broken_chain_is_not_resealed() -> None:
    """RFC 8617 §5.1.1: once the newest seal says cv=fail, no further set is added."""
    scenario = SIGNING[0]
    case = next(iter(scenario["tests"].values()))
    raw = crlf(case["message"])

    async def seal(raw: bytes, chain: str) -> list[tuple[str, str]]:
        return await arc_seal(
            raw,
            auth_results=f"lists.example.org; arc={chain}",
            domain=scenario["domain"],
            selector=scenario["sel"],
            key=scenario["privatekey"],
        )

    def prepend(headers: list[tuple[str, str]], raw: bytes) -> bytes:
        return b"".join(f"{n}: {v}\r\n".encode() for n, v in headers) + raw

    raw = prepend(await seal(raw, "none"), raw)
    failed = await seal(raw, "fail")
    assert "cv=fail" in failed[0][1]
    assert await seal(prepend(failed, raw), "fail") == []
