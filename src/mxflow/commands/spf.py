"""`mxflow spf eval` and `mxflow spf lint`: evaluate and lint SPF records.

Library modules are imported inside the handlers: the CLI imports every command module
on each run, and these need dnspython only when used.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys

from mxflow.commands import DEFAULT_RESOLVER, Subparsers, print_json
from mxflow.errors import MxflowError


def register(sub: Subparsers) -> None:
    """Add the `spf` subcommands to the `mxflow` parser."""
    spf = sub.add_parser("spf", help="evaluate and lint SPF records (RFC 7208)")
    commands = spf.add_subparsers(dest="spf_command", metavar="SUBCOMMAND", required=True)

    evaluate = commands.add_parser(
        "eval",
        help="may IP send as SENDER? prints the result word first, then the reason",
        description="Run RFC 7208 check_host() for one client IP and sender. "
        "Exit status 0 for pass, 1 for any other result.",
    )
    evaluate.add_argument("--ip", required=True, help="the SMTP client's IP address")
    evaluate.add_argument("--sender", required=True, help="MAIL FROM address ('' = null sender)")
    evaluate.add_argument("--helo", default="", help="the HELO/EHLO name")
    evaluate.add_argument(
        "--resolver", default=DEFAULT_RESOLVER, help="DNS server IP[:PORT] (default %(default)s)"
    )
    evaluate.add_argument("--receiver", default="unknown", help="this host's name for headers")
    evaluate.add_argument(
        "--headers", action="store_true", help="also print Received-SPF and Authentication-Results"
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object instead")
    evaluate.set_defaults(handler=eval_command)

    lint = commands.add_parser(
        "lint",
        help="list every problem of an SPF record, with position, severity and fix",
        description="Lint a record given as text, or the record published by --domain. "
        "Exit status 1 when any error is found.",
    )
    lint.add_argument("record", nargs="?", help="the record text, e.g. 'v=spf1 mx -all'")
    lint.add_argument("--domain", help="lint the SPF published at this domain (follows includes)")
    lint.add_argument(
        "--resolver", default=DEFAULT_RESOLVER, help="DNS server IP[:PORT] (default %(default)s)"
    )
    lint.add_argument("--json", action="store_true", help="print the report as JSON")
    lint.add_argument(
        "--private-ok",
        action="store_true",
        help="do not flag private/loopback addresses (lab records)",
    )
    lint.set_defaults(handler=lint_command)


def eval_command(args: argparse.Namespace) -> int:
    from mxflow.auth.spf import auth_results_part, check_mail_from, received_spf_header
    from mxflow.dns.resolver import resolver_option

    resolver = resolver_option(args.resolver)
    try:
        ipaddress.ip_address(args.ip)
    except ValueError as exc:
        raise MxflowError(f"--ip {args.ip!r} is not an IP address") from exc
    sender = args.sender.strip().strip("<>")  # as given in MAIL FROM: <a@b>, or <> for null
    sender = sender if "@" in sender or not sender else f"postmaster@{sender}"
    if not sender and not args.helo:
        raise MxflowError("a null sender needs --helo NAME (SPF then checks the HELO identity)")
    result = asyncio.run(
        check_mail_from(args.ip, sender, helo=args.helo, resolver=resolver, receiver=args.receiver)
    )
    status = 0 if result.result == "pass" else 1
    identity = "mailfrom" if sender else "helo"
    if args.json:
        print_json(
            {
                "result": result.result,
                "reason": result.reason,
                "mechanism": result.mechanism,
                "domain": result.domain,
                "identity": identity,
                "explanation": result.explanation,
                "received_spf": received_spf_header(result, identity=identity),
            }
        )
        return status
    line = f"{result.result} {result.reason}".rstrip()
    if result.mechanism and result.mechanism not in result.reason:
        line += f" [{result.mechanism}]"
    print(line)
    if result.explanation:
        print(f"explanation: {result.explanation}")
    if args.headers:
        print(f"Received-SPF: {received_spf_header(result, identity=identity)}")
        part = auth_results_part(result, identity=identity)
        print(f"Authentication-Results: {args.receiver}; {part}")
    return status


def lint_command(args: argparse.Namespace) -> int:
    from mxflow.records.spf_lint import lint_domain, lint_record

    if (args.record is None) == (args.domain is None):
        raise MxflowError("give either a record ('v=spf1 ...') or --domain DOMAIN")
    public = not args.private_ok
    if args.domain:
        from mxflow.dns.resolver import resolver_option

        resolver = resolver_option(args.resolver)
        report = asyncio.run(lint_domain(args.domain, resolver, public=public))
    else:
        report = lint_record(args.record, public=public)
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        print()
        return 1 if report.has_errors else 0
    if report.domain:
        print(f"SPF of {report.domain}: {report.record or '(none)'}")
    else:
        print(f"record: {report.record}")
    for finding in report.findings:
        print(finding)
    errors = sum(f.severity == "error" for f in report.findings)
    warnings = sum(f.severity == "warning" for f in report.findings)
    summary = f"{errors} error(s), {warnings} warning(s)"
    if report.domain:
        chain = ", ".join(f"{domain} {n}" for domain, n in report.lookup_chain.items())
        print(f"{summary}; DNS lookups {report.lookups}/10 ({chain})")
    else:  # the text alone: what its includes cost is unknown until they are resolved
        print(
            f"{summary}; DNS lookups {report.lookups}/10 in this record, before its "
            "includes (--domain follows them)"
        )
    return 1 if report.has_errors else 0
