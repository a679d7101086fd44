"""The OpenSPF RFC 7208 test suite, every case, through the real embedded DNS server (UDP).

One server per scenario (each on its own loopback address), started once for the module.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mxflow.auth.spf import SpfResult, check_mail_from
from mxflow.dns.server import EmbeddedDnsServer
from tests.spf.suite import SuiteCase, load_suite, start_scenario_servers

SCENARIOS = load_suite("rfc7208-tests.yml")
CASES = [case for scenario in SCENARIOS for case in scenario.cases]
DEFAULT_EXPLANATION_RE = r".* is not one of .*'s designated mail servers"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers() -> AsyncIterator[dict[int, EmbeddedDnsServer]]:
    async for started in start_scenario_servers(SCENARIOS):
        yield started


async def evaluate(case: SuiteCase, server: EmbeddedDnsServer) -> SpfResult:
    resolver = server.resolver(timeout=0.3, lifetime=0.6)
    return await check_mail_from(case.host, case.mailfrom, helo=case.helo, resolver=resolver)


def test_suite_has_every_case() -> None:
    assert len(CASES) == 203


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_rfc7208(case: SuiteCase, servers: dict[int, EmbeddedDnsServer]) -> None:
    result = await evaluate(case, servers[case.scenario])
    assert result.result in case.results, f"{case.spec}: {result.reason}"
    if case.explanation is not None and result.result == "fail":
        if case.explanation == "DEFAULT":
            assert re.fullmatch(DEFAULT_EXPLANATION_RE, result.explanation)
        else:
            assert result.explanation == case.explanation
