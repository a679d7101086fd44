"""Authentication-Results: formatting ours, reading others', removing forged ones."""

from __future__ import annotations

from mxflow.auth.dmarc import DmarcResult
from mxflow.auth.results import (
    authserv_id,
    format_authentication_results,
    header_values,
    method_result,
    split_results,
    strip_our_results,
)

MESSAGE = (
    b"Authentication-Results: mx.host.example; dkim=pass header.d=contoso.com;\r\n"
    b"\tdmarc=pass header.from=contoso.com\r\n"
    b"Received: from gw by mx\r\n"
    b"authentication-results: (forged) MX.HOST.EXAMPLE; spf=pass\r\n"
    b"Authentication-Results: gateway.example; arc=none; dmarc=fail\r\n"
    b"Subject: hello\r\n"
    b"Authentication-Results: mx.host.example.evil; spf=pass\r\n"
    b"\r\n"
    b"Authentication-Results: mx.host.example; this is body text\r\n"
)


def test_strip_removes_only_our_authserv_id_from_the_header() -> None:
    stripped = strip_our_results(MESSAGE, "mx.host.example")
    assert header_values(stripped, "Authentication-Results") == [
        "gateway.example; arc=none; dmarc=fail",
        "mx.host.example.evil; spf=pass",
    ]
    assert b"Received: from gw by mx\r\nAuthentication-Results: gateway" in stripped
    assert stripped.endswith(
        b"\r\n\r\nAuthentication-Results: mx.host.example; this is body text\r\n"
    )


def test_strip_last_header_keeps_the_blank_line() -> None:
    raw = b"Subject: x\r\nAuthentication-Results: me; spf=pass\r\n\r\nbody\r\n"
    assert strip_our_results(raw, "me") == b"Subject: x\r\n\r\nbody\r\n"


def test_format_folds_one_result_per_line() -> None:
    value = format_authentication_results(
        "mx.example", ["spf=pass smtp.mailfrom=a.example", "dkim=none"]
    )
    assert value == "mx.example;\r\n\tspf=pass smtp.mailfrom=a.example;\r\n\tdkim=none"
    assert format_authentication_results("mx.example", []) == "mx.example; none"


def test_reading_results_with_comments_and_quotes() -> None:
    value = (
        'mx.example (our; server) 1; spf=pass reason="a;b" smtp.mailfrom=x; dkim=fail (bad; sig)'
    )
    assert authserv_id(value) == "mx.example"
    assert split_results(value)[1:] == [
        'spf=pass reason="a;b" smtp.mailfrom=x',
        "dkim=fail (bad; sig)",
    ]
    assert method_result(value, "dkim") == "fail"
    assert method_result(value, "dmarc") is None


def test_reasons_in_comments_cannot_break_our_header() -> None:
    """An author's From text can carry an unbalanced '(': it must not end up in a comment."""
    dmarc = DmarcResult("permerror", reason="From must name one author domain, found 'Al (x'")
    timeout = DmarcResult("temperror", reason="DNS: the resolver did not answer (timed out)")
    assert timeout.ar_part() == "dmarc=temperror (DNS: the resolver did not answer timed out)"
    value = format_authentication_results("mx.host.example", [dmarc.ar_part(), "spf=pass"])
    assert split_results(value)[1:] == [
        "dmarc=permerror (From must name one author domain, found 'Al x')",
        "spf=pass",
    ]
    assert method_result(value, "spf") == "pass"
