"""Mail flow rules: parsed from [[mail_flow_rules]], evaluated in priority order."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mxflow.config import MailFlowRule
from mxflow.errors import ConfigError
from mxflow.intake.rules import (
    RuleInput,
    apply_header_changes,
    evaluate_rules,
    glob_match,
)
from tests.engine.helpers import node_config

GATEWAY_RULE = {
    "name": "gateway-spam-flag",
    "priority": 10,
    "conditions": {"connector": ["from-gateway"], "header": "X-Spam-Flag", "matches": "YES"},
    "actions": {"set_scl": 6},
}


def rules(tmp_path: Path, *tables: dict[str, Any]) -> tuple[MailFlowRule, ...]:
    cfg = node_config(
        "host",
        tmp_path,
        connectors=[{"name": "from-gateway", "from": ["127.10.10.1"]}],
        extra={"mail_flow_rules": list(tables)},
    )
    return cfg.host.mail_flow_rules


def headers(*lines: str) -> bytes:
    return ("".join(f"{x}\r\n" for x in lines) + "\r\n").encode()


def test_gateway_spam_flag_sets_scl_6_only_from_the_gateway_connector(tmp_path: Path) -> None:
    parsed = rules(tmp_path, GATEWAY_RULE)
    flagged = headers("X-Spam-Flag: yes", "From: a@fabrikam.test")
    hit = evaluate_rules(parsed, RuleInput(flagged, "127.10.10.1", connector="from-gateway"))
    assert hit.matched == ["gateway-spam-flag"] and hit.scl == 6
    other = evaluate_rules(parsed, RuleInput(flagged, "127.66.6.6", connector=None))
    assert other.matched == [] and other.scl is None
    clean = evaluate_rules(
        parsed, RuleInput(headers("X-Spam-Flag: NO"), "127.10.10.1", connector="from-gateway")
    )
    assert clean.scl is None


def test_priority_order_stop_and_scl_conditions(tmp_path: Path) -> None:
    parsed = rules(
        tmp_path,
        {"name": "late", "priority": 5, "actions": {"add_headers": {"X-Late": "1"}}},
        {"name": "raise", "priority": 1, "actions": {"set_scl": 7}},
        {
            "name": "high-scl-quarantine",
            "priority": 2,
            "conditions": {"scl": ">= 7"},
            "actions": {"quarantine": True, "stop": True},
        },
    )
    assert [r.name for r in parsed] == ["raise", "high-scl-quarantine", "late"]
    decision = evaluate_rules(parsed, RuleInput(headers("Subject: x"), "192.0.2.1"))
    assert decision.matched == ["raise", "high-scl-quarantine"]
    assert decision.quarantine and decision.stopped_by == "high-scl-quarantine"
    assert decision.add_headers == []


def test_ip_domain_reject_redirect_and_header_edits(tmp_path: Path) -> None:
    parsed = rules(
        tmp_path,
        {
            "name": "partner",
            "conditions": {
                "sender_ip": ["192.0.2.0/24", "198.51.100.1-198.51.100.9"],
                "sender_domain": ["fabrikam.test"],
                "recipient_domain": ["contoso.com"],
            },
            "actions": {
                "add_headers": {"X-Partner": "yes"},
                "remove_headers": ["X-Spam-Flag"],
                "redirect": "review@contoso.com",
            },
        },
        {
            "name": "block",
            "conditions": {"header": "Subject", "matches": "*lottery*"},
            "actions": {"reject": "no lotteries here"},
        },
    )
    msg = headers("X-Spam-Flag: YES", "\tfolded", 'From: "A" <a@mail.fabrikam.test>', "Subject: hi")
    inp = RuleInput(msg, "198.51.100.5", "x@y.test", ["bob@contoso.com"])
    decision = evaluate_rules(parsed, inp)
    assert decision.matched == ["partner"] and decision.redirect == ["review@contoso.com"]
    edited = apply_header_changes(msg + b"body\r\n", decision)
    assert edited.startswith(b"X-Partner: yes\r\n")
    assert b"X-Spam-Flag" not in edited and b"folded" not in edited
    assert edited.endswith(b"Subject: hi\r\n\r\nbody\r\n")
    outside = evaluate_rules(parsed, RuleInput(msg, "203.0.113.1", "", ["bob@contoso.com"]))
    assert outside.matched == []
    lottery = headers("Subject: You WON the Lottery!")
    rejected = evaluate_rules(parsed, RuleInput(lottery, "203.0.113.1"))
    assert rejected.reject == "no lotteries here" and rejected.stopped_by == "block"


def test_glob_is_linear_on_hostile_values() -> None:
    assert glob_match("*spam*", "this is spam, really")
    assert glob_match("yes", "yes") and not glob_match("yes", "yes!")
    assert glob_match("a*b*c", "axxbyyc") and not glob_match("a*b*c", "axxc")
    assert not glob_match("ab*ba", "aba")
    start = time.perf_counter()
    assert not glob_match("*a*a*a*a*a*a*a*a*b", "a" * 8000)
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"name": "x", "actions": {}}, "at least one action"),
        ({"name": "x"}, "actions"),
        ({"name": "x", "actions": {"set_scl": 12}}, "SCL from -1 to 9"),
        ({"name": "x", "conditions": {"scl": "~5"}, "actions": {"set_scl": 1}}, "comparison"),
        ({"name": "x", "conditions": {"regex": "a+"}, "actions": {"set_scl": 1}}, "no such key"),
        ({"name": "x", "conditions": {"matches": "a" * 300}, "actions": {"set_scl": 1}}, "glob"),
        ({"name": "x", "actions": {"reject": "a\r\nb"}}, "one-line"),
        ({"name": "x", "actions": {"add_headers": {"Bad Name": "v"}}}, "header name"),
        ({"name": "x", "actions": {"redirect": "nobody"}}, "an address"),
        (
            {
                "name": "x",
                "conditions": {"sender_ip": ["1.2.3.9-1.2.3.1"]},
                "actions": {"stop": True},
            },
            "range",
        ),
    ],
)
def test_bad_rules_are_config_errors(tmp_path: Path, table: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        rules(tmp_path, table)
    assert "mail_flow_rules[0]" in str(err.value) and fragment in str(err.value)


def test_hostile_headers_get_an_answer_not_a_traceback(tmp_path: Path) -> None:
    parsed = rules(
        tmp_path,
        GATEWAY_RULE,
        {
            "name": "any-from",
            "conditions": {"sender_domain": ["fabrikam.test"]},
            "actions": {"set_scl": 5},
        },
    )
    garbage = (
        b"X-Spam-Flag: \xff\xfeYES\x00\r\n"
        b"From: <<<<@@@@>>>>\r\n"
        + b"X-Long: "
        + b"a" * 200_000
        + b"\r\n"
        + b"no colon line\r\n" * 10_000
        + b"\r\nbody"
    )
    start = time.perf_counter()
    decision = evaluate_rules(parsed, RuleInput(garbage, "not-an-ip", connector="from-gateway"))
    assert decision.matched == [] and time.perf_counter() - start < 1.0
    lf_only = b"X-Spam-Flag : YES\nFrom: a@fabrikam.test\n\nbody\n"
    decision = evaluate_rules(parsed, RuleInput(lf_only, "127.10.10.1", connector="from-gateway"))
    assert decision.matched == ["any-from", "gateway-spam-flag"] and decision.scl == 6
