"""The lab end to end on a small corpus: the story the numbers must tell, the JSON's
shape, and every message of the corpus counted exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mxflow.lab.corpus import corpus_files, default_corpus

HAM, SPAM = 20, 10


def small_corpus(target: Path) -> Path:
    """The first HAM and SPAM messages of the shipped sample; half of them with CRLF."""
    files = corpus_files(default_corpus())
    for kind, count in (("ham", HAM), ("spam", SPAM)):
        (target / kind).mkdir(parents=True)
        for i, path in enumerate(files[kind][:count]):
            raw = path.read_bytes().replace(b"\r\n", b"\n")
            (target / kind / path.name).write_bytes(raw.replace(b"\n", b"\r\n") if i % 2 else raw)
    return target


def run_lab(tmp_path: Path, *args: str) -> tuple[int, str, dict[str, Any]]:
    out = tmp_path / "lab.json"
    result = subprocess.run(
        [sys.executable, "-m", "mxflow", "lab", "run", "--json", str(out),
         "--dir", str(tmp_path / "run"), *args],
        capture_output=True, text=True, timeout=150, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert out.exists(), result.stdout + result.stderr
    return result.returncode, result.stdout, json.loads(out.read_text())


def test_the_lab_tells_the_story_on_a_small_corpus(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path / "corpus")
    code, out, data = run_lab(tmp_path, "--scenario", "all", "--corpus", str(corpus))
    assert code == 0, out
    scenarios = data["scenarios"]
    assert set(scenarios) == {"1", "2", "2-ef"}
    for name, s in scenarios.items():
        inbound = s["inbound"]
        assert {"legitimate", "spam", "spoof", "malware"} <= set(inbound)
        for kind, counts in inbound.items():
            placed = sum(counts[p] for p in ("inbox", "junk", "quarantine", "rejected"))
            assert placed == counts["sent"], (name, kind, counts)  # nothing lost or doubled
            assert counts["lost"] == counts["duplicate"] == counts["tempfail"] == 0
        assert inbound["legitimate"]["sent"] == HAM and inbound["spam"]["sent"] == SPAM
        assert set(s["outbound"]) >= {"spf_pass", "dkim_pass", "dmarc_pass", "total"}
        assert s["bypass_blocked"] is True
    one, two, ef = scenarios["1"], scenarios["2"], scenarios["2-ef"]
    assert one["legitimate_in_inbox_pct"] >= 95 and one["spam_caught_pct"] >= 90
    assert one["inbound"]["spoof"]["inbox"] == one["inbound"]["malware"]["inbox"] == 0
    out1 = one["outbound"]
    assert out1["total"] > 0
    assert out1["spf_pass"] == out1["dkim_pass"] == out1["dmarc_pass"] == out1["total"]

    def score(s: dict[str, Any]) -> float:
        return float(s["legitimate_in_inbox_pct"] + s["spam_caught_pct"])

    assert score(one) - score(two) >= 10
    assert abs(score(one) - score(ef)) <= 3
    # scenario 2 without enhanced filtering: the host checks SPF against the archiver
    assert two["auth_seen"]["legitimate"]["spf_pass"] == 0
    assert ef["auth_seen"]["legitimate"]["spf_pass"] == ef["inbound"]["legitimate"]["inbox"]
    # the archiver journalled everything it relayed: inbound (not the bypass) and outbound
    for s in (two, ef):
        relayed = sum(c["sent"] for k, c in s["inbound"].items() if k != "bypass")
        assert s["archive"] == {"entries": relayed + s["outbound"]["sent"], "intact": True}
    assert "archive" not in one
    assert data["reference_spf"]["literal"] == "permerror"
    assert data["reference_spf"]["corrected"] == "pass"
    assert all(claim["ok"] for claim in data["story"])
    assert "scenario 2-ef" in out and "permerror" in out
