"""Driver for the OpenSPF test suites (YAML): scenarios -> zones -> expected results.

Conventions of the suites, as implemented here:
* an `SPF` record is served as TXT too, unless the name has its own `TXT` entry (a
  `TXT: NONE` entry means "no TXT record at all");
* `TIMEOUT` makes the embedded server never answer queries for that name, for the
  types the name has no records of (`SERVFAIL`, used by other suites, answers SERVFAIL);
* records are read with latin-1 and served as those exact bytes, so the deliberately
  non-ASCII records reach the SPF code as they would from the wire;
* `SPF: []` (a TXT record with no strings, which dnspython cannot represent) is
  served as one empty string, which is equally "not an SPF record";
* odd owner names (spaces, `%`, `:` and `/` in labels) are taken literally as labels.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mxflow.dns.server import EmbeddedDnsServer
from mxflow.dns.zone import Zone
from tests.conftest import unique_loopback

DATA = Path(__file__).parent.parent / "data" / "spf"


@dataclass(frozen=True)
class SuiteCase:
    scenario: int
    description: str
    name: str
    helo: str
    host: str
    mailfrom: str
    results: tuple[str, ...]
    explanation: str | None
    spec: str

    @property
    def id(self) -> str:
        return self.name


@dataclass
class Scenario:
    index: int
    description: str
    zonedata: dict[str, list[Any]]
    cases: list[SuiteCase]


def load_suite(filename: str) -> list[Scenario]:
    """The scenarios of one suite file in `tests/data/spf`."""
    with (DATA / filename).open(encoding="latin-1") as handle:
        documents = list(yaml.safe_load_all(handle))
    scenarios = []
    for index, doc in enumerate(documents):
        cases = []
        for name, test in doc["tests"].items():
            result = test["result"]
            cases.append(
                SuiteCase(
                    scenario=index,
                    description=doc.get("description", ""),
                    name=name,
                    helo=str(test.get("helo", "")),
                    host=str(test["host"]),
                    mailfrom=str(test.get("mailfrom", "")),
                    results=tuple(result) if isinstance(result, list) else (result,),
                    explanation=test.get("explanation"),
                    spec=str(test.get("spec", "")),
                )
            )
        scenarios.append(
            Scenario(index, doc.get("description", ""), doc.get("zonedata") or {}, cases)
        )
    return scenarios


def _txt_strings(value: str | list[str]) -> list[bytes]:
    pieces = [value] if isinstance(value, str) else list(value)
    strings: list[bytes] = []
    for piece in pieces:
        raw = piece.encode("latin-1")
        chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
        strings.extend(chunks)
    return strings


def _host(value: str) -> str:
    return value if value.endswith(".") else f"{value}."


def scenario_zone(scenario: Scenario) -> Zone:
    """One zone at the root holding all of the scenario's records."""
    zone = Zone.from_records(".", [])
    for owner, entries in scenario.zonedata.items():
        own_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        for entry in entries:
            if entry in ("TIMEOUT", "SERVFAIL"):
                zone.add(owner, entry, "")
                continue
            ((rdtype, value),) = entry.items()
            if rdtype == "SPF":
                strings = _txt_strings(value)
                zone.add(owner, "SPF", strings)
                if not own_txt:
                    zone.add(owner, "TXT", strings)
            elif rdtype == "TXT":
                if value != "NONE":
                    zone.add(owner, "TXT", _txt_strings(value))
            elif rdtype == "MX":
                priority, host = value
                zone.add(owner, "MX", f"{priority} {_host(host) if host else '.'}")
            elif rdtype in {"PTR", "CNAME"}:
                zone.add(owner, rdtype, _host(value))
            else:
                zone.add(owner, rdtype, str(value))
    return zone


def changed_results(
    old: list[Scenario], new: list[Scenario]
) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Cases in both suites whose accepted results differ: name -> (old, new)."""
    before = {case.name: case for scenario in old for case in scenario.cases}
    after = {case.name: case for scenario in new for case in scenario.cases}
    return {
        name: (before[name].results, after[name].results)
        for name in sorted(before.keys() & after.keys())
        if set(before[name].results) != set(after[name].results)
    }


async def start_scenario_servers(
    scenarios: Sequence[Scenario],
) -> AsyncIterator[dict[int, EmbeddedDnsServer]]:
    """Yield {scenario index: running server}, one per scenario; stops them afterwards."""
    started: dict[int, EmbeddedDnsServer] = {}
    try:
        for scenario in scenarios:
            server = EmbeddedDnsServer([scenario_zone(scenario)], host=unique_loopback())
            await server.start()
            started[scenario.index] = server
        yield started
    finally:
        for server in started.values():
            await server.stop()
