"""The older OpenSPF RFC 4408 suite, and the cases where RFC 7208 changed the answer.

mxflow implements RFC 7208; the 4408 suite still passes in full because, where the two
RFCs disagree, the 4408 suite (release 2009.10) already accepts the 7208 answer as one
of its alternatives. `CHANGED_BY_RFC7208` pins the cases whose accepted answers differ
between the suites, and the test checks that mxflow gives the RFC 7208 answer there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from mxflow.auth.spf import check_mail_from
from mxflow.dns.server import EmbeddedDnsServer
from tests.spf.suite import SuiteCase, changed_results, load_suite, start_scenario_servers

SCENARIOS = load_suite("rfc4408-tests.yml")
CASES = [case for scenario in SCENARIOS for case in scenario.cases]

# name: (what RFC 4408's suite accepts, what RFC 7208's suite accepts)
CHANGED_BY_RFC7208 = {
    "cidr6-0-ip4": (("neutral", "pass"), ("neutral",)),  # ip6 cidr never matches an IPv4 client
    "cidr6-ip4": (("neutral", "pass"), ("neutral",)),
    "exists-dnserr": (("fail", "temperror"), ("temperror",)),  # a DNS error is temperror
    "multispf2": (("permerror", "pass"), ("pass",)),  # type SPF (99) records are ignored
    "multitxt1": (("pass", "permerror"), ("permerror",)),  # two v=spf1 TXT records
    "mx-limit": (("neutral", "pass", "permerror"), ("permerror",)),  # > 10 MX names
    "nospftxttimeout": (("temperror", "none"), ("temperror",)),
    "spfonly": (("fail", "none"), ("none",)),  # only TXT is consulted
    "spfoverride": (("pass", "fail"), ("fail",)),
    "spftimeout": (("fail", "temperror"), ("fail",)),
    "txtonly": (("fail", "none"), ("fail",)),
    "txttimeout": (("fail", "temperror"), ("temperror",)),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers() -> AsyncIterator[dict[int, EmbeddedDnsServer]]:
    async for started in start_scenario_servers(SCENARIOS):
        yield started


def test_suite_has_every_case() -> None:
    assert len(CASES) == 191


def test_known_differences_between_the_suites() -> None:
    changed = changed_results(SCENARIOS, load_suite("rfc7208-tests.yml"))
    normalised = {name: (set(old), set(new)) for name, (old, new) in changed.items()}
    expected = {name: (set(old), set(new)) for name, (old, new) in CHANGED_BY_RFC7208.items()}
    assert normalised == expected


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_rfc4408(case: SuiteCase, servers: dict[int, EmbeddedDnsServer]) -> None:
    resolver = servers[case.scenario].resolver(timeout=0.3, lifetime=0.6)
    result = await check_mail_from(case.host, case.mailfrom, helo=case.helo, resolver=resolver)
    assert result.result in case.results, f"{case.spec}: {result.reason}"
    if case.name in CHANGED_BY_RFC7208:
        assert result.result in CHANGED_BY_RFC7208[case.name][1]
