"""Scores to SCL (never 2-4) to action; spam headers; malware is never delivered."""

from __future__ import annotations

import pytest

from mxflow.checks.verdict import ALLOWED, BLOCKED, decide, scl_for, spam_headers
from mxflow.config.filter import FilterPolicy
from mxflow.mail import Action, CheckResult

POLICY = FilterPolicy()


def result(*symbols: tuple[str, float], action: Action | None = None) -> CheckResult:
    r = CheckResult(action=action, reason="asked" if action else "")
    for name, score in symbols:
        r.add(name, score)
    return r


def test_scl_never_takes_the_values_two_to_four() -> None:
    seen = {scl_for(x / 10, POLICY) for x in range(-200, 400)}
    assert seen == {0, 1, 5, 6, 7, 8, 9}


@pytest.mark.parametrize(
    ("score", "scl", "action"),
    [
        (-3.0, 0, Action.DELIVER),
        (3.0, 1, Action.DELIVER),
        (5.0, 5, Action.JUNK),
        (8.0, 6, Action.JUNK),
        (10.0, 7, Action.QUARANTINE),
        (13.0, 8, Action.QUARANTINE),
        (15.0, 9, Action.REJECT),
    ],
)
def test_bands_and_default_actions(score: float, scl: int, action: Action) -> None:
    verdict = decide([result(("X", score))], POLICY, "192.0.2.1")
    assert (verdict.score, verdict.scl, verdict.action) == (score, scl, action)


def test_junk_gets_spam_headers_with_sfv_scl_and_cip() -> None:
    verdict = decide([result(("BAYES_SPAM", 5.5), ("MISSING_DATE", 1.0))], POLICY, "127.9.9.9")
    headers = dict(verdict.headers)
    assert verdict.action is Action.JUNK
    assert headers["X-Spam-Status"].startswith("Yes, score=6.5 required=5.0")
    assert "tests=BAYES_SPAM,MISSING_DATE" in headers["X-Spam-Status"]
    assert headers["X-Spam-Score"] == "6.5"
    report = headers["X-Forefront-Antispam-Report"]
    assert "CIP:127.9.9.9;" in report and "SFV:SPM;" in report and "SCL:5;" in report


def test_the_report_names_the_category_like_the_host() -> None:
    def report(*symbols: tuple[str, float]) -> str:
        verdict = decide([result(*symbols)], POLICY, "192.0.2.1")
        return dict(spam_headers(verdict, POLICY, "192.0.2.1"))["X-Forefront-Antispam-Report"]

    assert "SFV:NSPM;SCL:0;SCORE:0.0;CAT:NONE;DIR:INB;" in report(("HAM", 0.0))
    assert ";SFV:SPM;SCL:5;SCORE:6.0;CAT:SPM;" in report(("BAYES_SPAM", 6.0))
    assert ";SCL:7;SCORE:11.0;CAT:HSPM;" in report(("BAYES_SPAM", 11.0))
    assert ";SCL:9;SCORE:20.0;CAT:MALW;" in report(("MALWARE_SCRIPT", 20.0))


def test_clean_mail_is_marked_not_spam() -> None:
    verdict = decide([result(("BAYES_HAM", -2.0))], POLICY, "192.0.2.1")
    headers = dict(verdict.headers)
    assert headers["X-Spam-Status"].startswith("No, score=-2.0")
    assert "SFV:NSPM;" in headers["X-Forefront-Antispam-Report"]


def test_reject_reason_names_the_symbols() -> None:
    verdict = decide([result(("RBL_LAB", 9.0), ("BAYES_SPAM", 8.0))], POLICY, "192.0.2.1")
    assert verdict.action is Action.REJECT
    assert "RBL_LAB" in verdict.reason and "BAYES_SPAM" in verdict.reason
    assert verdict.headers == []  # nothing is added to a message that is not delivered


def test_a_check_can_ask_for_a_stronger_action() -> None:
    verdict = decide([result(("DMARC_REJECT", 2.0), action=Action.REJECT)], POLICY, "1.2.3.4")
    assert verdict.action is Action.REJECT and verdict.reason == "asked"


def test_allow_list_bypasses_spam_scoring_with_scl_minus_one() -> None:
    verdict = decide([result((ALLOWED, 0.0), ("BAYES_SPAM", 12.0))], POLICY, "192.0.2.1")
    assert (verdict.scl, verdict.action) == (-1, Action.DELIVER)
    assert "SFV:SKA;" in dict(verdict.headers)["X-Forefront-Antispam-Report"]


@pytest.mark.parametrize("extra", [(ALLOWED, 0.0), ("BAYES_HAM", -50.0)])
def test_malware_is_never_delivered(extra: tuple[str, float]) -> None:
    verdict = decide([result(("CLAM_VIRUS", 0.0), extra)], POLICY, "192.0.2.1")
    assert verdict.action is Action.QUARANTINE
    assert verdict.reason.startswith("malware")
    rejecting = FilterPolicy(malware_action=Action.REJECT)
    assert decide([result(("MALWARE_EXECUTABLE", 20.0))], rejecting, "1.2.3.4").action is (
        Action.REJECT
    )


def test_an_allow_listed_sender_is_not_delivered_unscanned_when_clamd_is_down() -> None:
    down = result(("CLAM_UNAVAILABLE", 0.0), action=Action.TEMPFAIL)
    verdict = decide([result((ALLOWED, 0.0)), down], POLICY, "192.0.2.1")
    assert verdict.action is Action.TEMPFAIL and verdict.reason == "asked"
    assert verdict.headers == []


def test_block_list_wins_over_allow_list() -> None:
    verdict = decide(
        [result((ALLOWED, 0.0)), result((BLOCKED, 100.0), action=Action.REJECT)], POLICY, "1.2.3.4"
    )
    assert verdict.action is Action.REJECT
