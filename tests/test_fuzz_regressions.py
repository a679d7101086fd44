"""Every fuzz seed and every input a fuzzer once crashed on, replayed through its target.

`fuzz/run.py` (atheris) searches; this pins what it found: each file under
`fuzz/regressions/<target>/` made the target raise or hang before its fix.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fuzz.targets import TARGETS

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
CASES = sorted(
    (kind, target, path)
    for kind in ("seeds", "regressions")
    for target in TARGETS
    for path in (FUZZ / kind / target).glob("*")
    if (FUZZ / kind / target).is_dir()
)


@pytest.mark.parametrize(
    ("kind", "target", "path"), CASES, ids=[f"{k}/{t}/{p.name}" for k, t, p in CASES]
)
def test_input_is_handled(kind: str, target: str, path: Path) -> None:
    started = time.monotonic()
    TARGETS[target](path.read_bytes())
    assert time.monotonic() - started < 5.0


def test_every_target_has_seeds_and_the_findings_are_pinned() -> None:
    for target in TARGETS:
        assert any((FUZZ / "seeds" / target).glob("*")), target
    # the crashes found while writing the targets (see fuzz/README.md)
    assert any((FUZZ / "regressions" / "dkim_tags").glob("crash-*"))
    assert any((FUZZ / "regressions" / "dmarc_record").glob("*pct*"))


def test_the_findings_were_real_crashes_of_the_parsers_themselves() -> None:
    """The fixes are in the parsers, not in the fuzz targets' except clauses."""
    from mxflow.auth import dkim, dmarc

    crash = next((FUZZ / "regressions" / "dkim_tags").glob("crash-*")).read_bytes()
    assert dkim.signature_key_names(b"DKIM-Signature: " + crash + b"\r\n\r\n") == []
    with pytest.raises(dmarc.DmarcRecordError):
        dmarc.parse_record("v=DMARC1; p=none; pct=\u00b2")
