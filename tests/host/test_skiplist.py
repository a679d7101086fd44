"""Enhanced filtering: the Received walk recovers the original sender and trusts nothing below."""

from __future__ import annotations

import ipaddress
import time

from mxflow.config import DEFAULT_PRIVATE_RANGES, EnhancedFiltering
from mxflow.intake.skiplist import (
    EXTERNAL_ORIGINAL,
    SKIP_LISTED,
    apply_stamps,
    parse_received,
    recover_sender,
)

GATEWAY = "203.0.113.10"
ARCHIVER = "198.51.100.7"
ORIGIN = "192.0.2.55"


def nets(*texts: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


def received(helo: str, ip: str, by: str) -> str:
    return f"Received: from {helo} ({helo} [{ip}])\r\n\tby {by} with ESMTP id X1; 4 Dec 2026\r\n"


def section(*lines: str) -> bytes:
    return ("".join(lines) + "From: a@fabrikam.test\r\nSubject: hi\r\n\r\n").encode()


def run(headers: bytes, ef: EnhancedFiltering, **kw: object) -> object:
    args: dict[str, object] = {
        "client_ip": GATEWAY,
        "client_helo": "gw.partner.test",
        "settings": ef,
        "private_ranges": DEFAULT_PRIVATE_RANGES,
        "rcpt_tos": ["bob@contoso.com"],
    }
    args.update(kw)
    return recover_sender(headers, **args)  # type: ignore[arg-type]


def test_skip_last_hop_recovers_the_original_sender_and_ignores_forged_lines_below() -> None:
    headers = section(
        received("mail.fabrikam.test", ORIGIN, "gw.partner.test"),
        received("forged.example", "8.8.8.8", "mx.fabrikam.test"),
        "Received: from liar (liar [1.1.1.1]) by anything; date\r\n",
    )
    result = run(headers, EnhancedFiltering(skip_last_hop=True))
    assert result.applied and result.acted
    assert (result.sender_ip, result.sender_helo) == (ORIGIN, "mail.fabrikam.test")
    assert result.skipped == (GATEWAY,)
    assert dict(result.headers) == {
        SKIP_LISTED: f"ip=[{ORIGIN}];domain=mail.fabrikam.test",
        EXTERNAL_ORIGINAL: f"ip=[{ORIGIN}];domain=mail.fabrikam.test",
    }


def test_two_skipped_hops_by_listed_ips_range_and_cidr() -> None:
    headers = section(
        received("archiver.test", ARCHIVER, "gw.partner.test"),
        received("mail.fabrikam.test", ORIGIN, "archiver.test"),
        received("forged.example", "203.0.113.99", "mail.fabrikam.test"),
    )
    ef = EnhancedFiltering(skip_ips=nets("203.0.113.0/28", "198.51.100.7/32"))
    result = run(headers, ef)
    assert result.sender_ip == ORIGIN
    assert result.skipped == (GATEWAY, ARCHIVER)
    # the forged line below names an address inside the skip list: never read
    assert result.recovered is not None and result.recovered.ip == ORIGIN


def test_a_forged_chain_cannot_choose_the_ip() -> None:
    # The original sender writes lines that claim it came via a skip-listed hop: the walk
    # stops at the first hop it may not skip (the real sender) and reads nothing below.
    headers = section(
        received("spammer.test", "192.0.2.66", "gw.partner.test"),
        received("gw.partner.test", GATEWAY, "spammer.test"),
        received("good.example", "192.0.2.1", "gw.partner.test"),
    )
    result = run(headers, EnhancedFiltering(skip_ips=nets("203.0.113.10/32")))
    assert result.sender_ip == "192.0.2.66"
    assert result.skipped == (GATEWAY,)


def test_skip_last_hop_skips_only_the_last_hop() -> None:
    headers = section(
        received("archiver.test", ARCHIVER, "gw.partner.test"),
        received("mail.fabrikam.test", ORIGIN, "archiver.test"),
    )
    ef = EnhancedFiltering(skip_last_hop=True, skip_ips=nets("198.51.100.0/24"))
    result = run(headers, ef)  # skip_ips is ignored in this mode (config refuses both)
    assert result.sender_ip == ARCHIVER and result.skipped == (GATEWAY,)


def test_private_hops_are_skipped_on_their_own() -> None:
    headers = section(
        received("relay.internal", "10.1.2.3", "gw.partner.test"),
        received("mail.fabrikam.test", ORIGIN, "relay.internal"),
    )
    result = run(headers, EnhancedFiltering(skip_last_hop=True))
    assert result.sender_ip == ORIGIN
    assert result.skipped == (GATEWAY, "10.1.2.3")


def test_loopback_is_private_unless_the_private_ranges_say_otherwise() -> None:
    headers = section(received("mail.fabrikam.test", "127.66.6.6", "gw"))
    ef = EnhancedFiltering(skip_ips=nets("127.10.10.1/32"))
    default = run(headers, ef, client_ip="127.10.10.1")
    assert not default.acted  # 127.66.6.6 is private by default: no external sender found
    assert "no external sender" in default.reason
    lab = run(headers, ef, client_ip="127.10.10.1", private_ranges=nets("10.0.0.0/8"))
    assert lab.sender_ip == "127.66.6.6"


def test_ipv6_hops() -> None:
    headers = section(
        "Received: from mail6.fabrikam.test (mail6.fabrikam.test [IPv6:2001:db8:5::25])\r\n"
        "\tby gw.partner.test with ESMTPS; Fri, 4 Dec 2026\r\n"
    )
    ef = EnhancedFiltering(skip_ips=nets("2001:db8:1::/48"))
    result = run(headers, ef, client_ip="2001:db8:1::10")
    assert (result.sender_ip, result.sender_helo) == ("2001:db8:5::25", "mail6.fabrikam.test")


def test_own_received_line_on_top_is_passed_over() -> None:
    headers = section(
        received("gw.partner.test", GATEWAY, "mailbox.contoso.test"),
        received("mail.fabrikam.test", ORIGIN, "gw.partner.test"),
    )
    ef = EnhancedFiltering(skip_last_hop=True)
    result = run(headers, ef, own_hostname="mailbox.contoso.test")
    assert result.sender_ip == ORIGIN


def test_malformed_received_lines_stop_the_walk_with_a_reason() -> None:
    ef = EnhancedFiltering(skip_last_hop=True)
    for bad in (
        "Received: by nobody; date\r\n",
        "Received: from helo-only by x; date\r\n",
        "Received: from [999.1.1.1] (x [300.2.3.4]) by x; date\r\n",
        "Received: from \x00\xff\xfe ([) by x\r\n",
        "Received:\r\n",
    ):
        result = run(section(bad), ef)
        assert result.applied and not result.acted
        assert result.sender_ip == GATEWAY
        assert "names no client IP" in result.reason
    raw = b"Received: from h\xff\xfe ([192.0.2.9]) by x\r\n\r\n"
    assert run(raw, ef).sender_ip == "192.0.2.9"


def test_parse_received_forms() -> None:
    assert parse_received("from [192.0.2.1] (unknown [192.0.2.2]) by x") is not None
    hop = parse_received("from [192.0.2.1] (unknown [192.0.2.2]) by x")
    assert hop is not None and hop.ip == "192.0.2.2"  # the verified address, not the HELO
    hop = parse_received("from EX1.contoso.test (192.0.2.3) by EX2")  # Exchange style
    assert hop is not None and (hop.ip, hop.helo) == ("192.0.2.3", "EX1.contoso.test")
    hop = parse_received("from [192.0.2.4] by x")
    assert hop is not None and hop.ip == "192.0.2.4"
    hop = parse_received("from h (h [::ffff:192.0.2.5]) by x")
    assert hop is not None and hop.ip == "192.0.2.5"


def test_recipient_scoping_needs_every_recipient_listed() -> None:
    headers = section(received("mail.fabrikam.test", ORIGIN, "gw"))
    ef = EnhancedFiltering(skip_last_hop=True, users=frozenset({"bob@contoso.com"}))
    listed = run(headers, ef, rcpt_tos=["Bob@contoso.com"])
    assert listed.acted and listed.sender_ip == ORIGIN
    mixed = run(headers, ef, rcpt_tos=["bob@contoso.com", "alice@contoso.com"])
    assert not mixed.applied and mixed.sender_ip == GATEWAY and mixed.headers == ()
    assert "ef_users" in mixed.reason


def test_test_mode_stamps_but_acts_as_without() -> None:
    headers = section(received("mail.fabrikam.test", ORIGIN, "gw"))
    result = run(headers, EnhancedFiltering(skip_last_hop=True, test_mode=True))
    assert result.applied and result.test_mode and not result.acted
    assert result.sender_ip == GATEWAY
    assert result.recovered is not None and result.recovered.ip == ORIGIN
    assert dict(result.headers) == {EXTERNAL_ORIGINAL: f"ip=[{ORIGIN}];domain=mail.fabrikam.test"}


def test_no_enhanced_filtering_and_nothing_to_skip() -> None:
    headers = section(received("mail.fabrikam.test", ORIGIN, "gw"))
    assert run(headers, None).applied is False
    listed_elsewhere = run(headers, EnhancedFiltering(skip_ips=nets("198.51.100.0/24")))
    assert listed_elsewhere.sender_ip == GATEWAY and not listed_elsewhere.acted


def test_ten_thousand_received_lines_are_linear() -> None:
    forged = "".join(received(f"h{i}", "192.0.2.1", "x") for i in range(10_000))
    big = section(received("mail.fabrikam.test", ORIGIN, "gw"), forged)
    everything_skipped = section(
        *(received(f"h{i}", f"203.0.113.{i % 16}", "x") for i in range(10_000))
    )
    ef = EnhancedFiltering(skip_ips=nets("203.0.113.0/28"))
    start = time.perf_counter()
    assert run(big, ef).sender_ip == ORIGIN
    result = run(everything_skipped, ef)
    assert "more than" in result.reason and not result.acted
    # one long folded field, and a huge run of garbage lines
    folded = b"Received: from x" + b"\r\n\t(" * 100_000 + b"\r\n\r\n"
    assert run(folded, ef).sender_ip == GATEWAY
    garbage = b"no colon here\r\n" * 100_000 + b"\r\n"
    assert run(garbage, ef).sender_ip == GATEWAY
    assert time.perf_counter() - start < 2.0


def test_incoming_stamps_are_replaced_by_ours() -> None:
    forged = f"{SKIP_LISTED}: ip=[192.0.2.200];domain=trust.me\r\n\tcontinued\r\n"
    headers = section(received("mail.fabrikam.test", ORIGIN, "gw"), forged)
    result = run(headers, EnhancedFiltering(skip_last_hop=True))
    stamped = apply_stamps(headers + b"body\r\n", result)
    assert b"192.0.2.200" not in stamped and b"continued" not in stamped
    assert stamped.startswith(
        f"{SKIP_LISTED}: ip=[{ORIGIN}];domain=mail.fabrikam.test\r\n".encode()
    )
    assert stamped.endswith(b"Subject: hi\r\n\r\nbody\r\n")
