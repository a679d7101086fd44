"""The Public Suffix List's official tests and OpenDMARC's record and alignment cases."""

from __future__ import annotations

import csv
import functools

import pytest
from publicsuffixlist import PublicSuffixList

from mxflow.auth.dmarc import DmarcRecordError, aligned, parse_record, registrable_domain
from tests.auth.zones import DATA


@functools.cache
def vendored_psl() -> PublicSuffixList:
    with (DATA / "publicsuffix" / "public_suffix_list.dat").open(encoding="utf-8") as handle:
        return PublicSuffixList(handle)


def psl_cases() -> list[tuple[str | None, str | None]]:
    cases = []
    text = (DATA / "publicsuffix" / "tests.txt").read_text(encoding="utf-8")
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("//"):
            continue
        given, expected = line.split()
        cases.append((None if given == "null" else given, None if expected == "null" else expected))
    return cases


def tsv(name: str) -> list[list[str]]:
    with (DATA / "opendmarc" / name).open(encoding="utf-8") as handle:
        return list(csv.reader(handle, delimiter="\t"))[1:]


PSL = psl_cases()
RECORDS = tsv("dmarc-record-parse-cases.tsv")
ALIGNMENT = tsv("alignment-cases.tsv")


def test_suite_sizes() -> None:
    assert (len(PSL), len(RECORDS), len(ALIGNMENT)) == (78, 19, 10)


@pytest.mark.parametrize(("domain", "expected"), PSL)
def test_public_suffix_list(domain: str | None, expected: str | None) -> None:
    found = registrable_domain(domain, vendored_psl()) if domain is not None else None
    assert found == expected


@pytest.mark.parametrize(("record", "expected"), RECORDS)
def test_opendmarc_record_parsing(record: str, expected: str) -> None:
    try:
        parse_record(record)
    except DmarcRecordError as exc:
        assert exc.status.value == expected
        assert str(exc)
    else:
        assert expected == "DMARC_PARSE_OKAY"


@pytest.mark.parametrize(("from_domain", "auth_domain", "mode", "expected"), ALIGNMENT)
def test_opendmarc_alignment(from_domain: str, auth_domain: str, mode: str, expected: str) -> None:
    result = aligned(from_domain, auth_domain, mode[0].lower(), vendored_psl())
    assert (0 if result else -1) == int(expected)
