"""`mxflow auth check`: the Authentication-Results mxflow would add to a message.

Exit status 0 unless the composite verdict is compauth=fail (then 1), so a script can
tell a spoof without parsing; `--json` prints the same facts as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
from pathlib import Path

from mxflow.auth.authenticate import AuthOutcome, authenticate
from mxflow.auth.results import strip_our_results
from mxflow.commands import (
    DEFAULT_RESOLVER,
    EXIT_NEGATIVE,
    EXIT_OK,
    EXIT_STATUS_HELP,
    Subparsers,
    print_json,
)
from mxflow.dns.resolver import resolver_option
from mxflow.errors import MxflowError


def register(sub: Subparsers) -> None:
    """Add the `auth` subcommands to the `mxflow` parser."""
    parser = sub.add_parser("auth", help="sender authentication: SPF, DKIM, DMARC, ARC")
    auth_sub = parser.add_subparsers(dest="auth_command", metavar="SUBCOMMAND", required=True)
    check = auth_sub.add_parser(
        "check",
        help="print the Authentication-Results mxflow would add to a message",
        description="Exit status 1 when the composite verdict is compauth=fail.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("message", metavar="MESSAGE_FILE", help="message file (RFC 5322)")
    check.add_argument("--ip", required=True, help="the connecting client's IP address")
    check.add_argument("--helo", required=True, help="the name the client gave in HELO/EHLO")
    check.add_argument(
        "--mail-from", required=True, help="the MAIL FROM address ('' for the null sender)"
    )
    check.add_argument(
        "--resolver",
        default=DEFAULT_RESOLVER,
        help="DNS server to ask, IP[:PORT] (default %(default)s)",
    )
    check.add_argument(
        "--authserv-id", default="mxflow.localhost", help="our name in Authentication-Results"
    )
    check.add_argument(
        "--trusted-arc-sealer",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="an ARC sealing domain to trust (repeatable)",
    )
    check.add_argument("--verbose", action="store_true", help="also print the compauth detail")
    check.add_argument("--json", action="store_true", help="print one JSON object instead")
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        raw = Path(args.message).read_bytes()
    except OSError as exc:
        raise MxflowError(f"cannot read message {args.message}: {exc.strerror}") from exc
    try:
        ipaddress.ip_address(args.ip)
    except ValueError as exc:
        raise MxflowError(f"--ip {args.ip!r} is not an IP address") from exc
    resolver = resolver_option(args.resolver)
    raw = strip_our_results(raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), args.authserv_id)
    outcome = asyncio.run(
        authenticate(
            raw,
            ip=args.ip,
            helo=args.helo,
            mail_from=args.mail_from.strip("<>"),
            resolver=resolver,
            trusted_arc_sealers=args.trusted_arc_sealer,
            receiver=args.authserv_id,
        )
    )
    status = EXIT_NEGATIVE if outcome.compauth.result == "fail" else EXIT_OK
    if args.json:
        print_json(outcome_json(outcome, args.authserv_id))
        return status
    print(f"Authentication-Results: {outcome.header(args.authserv_id)}".replace("\r\n", "\n"))
    if args.verbose:
        print(f"; compauth {outcome.compauth.code}: {outcome.compauth.detail}")
    return status


def outcome_json(outcome: AuthOutcome, authserv_id: str) -> dict[str, object]:
    """The `--json` record: each method's result, and the header text as printed."""
    return {
        "spf": {"result": outcome.spf.result, "domain": outcome.spf.domain},
        "dkim": [
            {"result": r.result, "domain": r.domain, "selector": r.selector, "reason": r.reason}
            for r in outcome.dkim
        ],
        "dmarc": {"result": outcome.dmarc.result, "from_domain": outcome.dmarc.from_domain},
        "arc": {"result": outcome.arc.cv},
        "compauth": {
            "result": outcome.compauth.result,
            "reason": outcome.compauth.code,
            "detail": outcome.compauth.detail,
        },
        "authentication_results": outcome.header(authserv_id).replace("\r\n\t", " "),
    }
