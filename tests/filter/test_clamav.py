"""ClamAV through clamd's socket (INSTREAM), with the signature database .ci generates."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path

import pytest

from mxflow.checks.clamav import ClamavCheck, ClamdSizeLimit, ping, scan_bytes
from mxflow.checks.pipeline import FilterPipeline
from mxflow.config.filter import ClamdAddress, FilterPolicy
from mxflow.mail import Action, Phase
from tests.conftest import require, unique_loopback
from tests.filter.helpers import CLAMD, TEST_SIGNATURE_MARKER, context, eicar, message


@pytest.fixture
async def clamd() -> ClamdAddress:
    address = ClamdAddress(CLAMD)
    require(await ping(address), f"clamd at {CLAMD} (.ci/services.d/clamd.sh starts it)")
    return address


async def test_eicar_is_found_and_clean_data_is_not(clamd: ClamdAddress) -> None:
    assert (await scan_bytes(clamd, eicar())).startswith("Eicar-Test-Signature")
    assert await scan_bytes(clamd, b"nothing to see here") is None


async def test_stream_larger_than_one_chunk(clamd: ClamdAddress) -> None:
    data = b"x" * 700_000 + TEST_SIGNATURE_MARKER + b"y" * 10
    assert (await scan_bytes(clamd, data)).startswith("Mxflow.Test.Marker")


async def test_eicar_attached_and_zipped_in_a_message_is_quarantined(clamd: ClamdAddress) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", eicar())
    raw = message(attachments=[("docs.zip", "application/zip", buffer.getvalue())])
    pipeline = FilterPipeline(FilterPolicy(checks=("clamav", "bayes")), clamd=clamd.text)
    verdict = await pipeline.evaluate(context(raw), Phase.DATA)
    names = {s.name: s.detail for s in verdict.symbols}
    assert names["CLAM_VIRUS"].startswith("Eicar-Test-Signature")
    assert verdict.action is Action.QUARANTINE
    assert "Eicar-Test-Signature" in verdict.reason


async def test_clean_message_passes(clamd: ClamdAddress) -> None:
    check = ClamavCheck(FilterPolicy(), clamd)
    result = await check.check(context(message()))
    assert result.symbols == [] and result.action is None


async def test_unreachable_clamd_tempfails_rather_than_let_malware_through() -> None:
    port_without_listener = f"{unique_loopback()}:9"
    check = ClamavCheck(FilterPolicy(), ClamdAddress(port_without_listener))
    result = await check.check(context(message()))
    assert result.action is Action.TEMPFAIL
    assert [s.name for s in result.symbols] == ["CLAM_UNAVAILABLE"]
    missing_socket = ClamavCheck(FilterPolicy(), ClamdAddress("unix:/nonexistent/clamd.sock"))
    assert (await missing_socket.check(context(message()))).action is Action.TEMPFAIL


async def test_a_message_above_clamds_stream_limit_is_unscannable_not_passed(
    clamd: ClamdAddress,
) -> None:
    """Issue 10 attack 1: what the scanner could not read is never a silent pass; by
    default it is quarantined, and `unscannable_action` may say tempfail instead."""
    big = b"x" * (21 * 1024 * 1024)  # the CI clamd has StreamMaxLength 20M
    with pytest.raises(ClamdSizeLimit):
        await scan_bytes(clamd, big)
    result = await ClamavCheck(FilterPolicy(), clamd).check(context(big))
    assert result.action is Action.QUARANTINE
    assert [s.name for s in result.symbols] == ["CLAM_SKIPPED_SIZE", "UNSCANNABLE"]
    tempfail = FilterPolicy(unscannable_action=Action.TEMPFAIL)
    assert (await ClamavCheck(tempfail, clamd).check(context(big))).action is Action.TEMPFAIL


async def test_a_scan_that_does_not_finish_tempfails(tmp_path: Path) -> None:
    path = tmp_path / "silent.sock"

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # swallow everything, answer nothing

    server = await asyncio.start_unix_server(never_answer, path=str(path))
    async with server:
        check = ClamavCheck(FilterPolicy(), ClamdAddress(f"unix:{path}"), timeout=0.3)
        pipeline = FilterPipeline(FilterPolicy(checks=("clamav",)), checks=[check])
        verdict = await pipeline.evaluate(context(message()), Phase.DATA)
    assert verdict.action is Action.TEMPFAIL
    assert "CLAMAV_TIMEOUT" in {s.name for s in verdict.symbols}
