"""`mxflow dns serve | plan | check`: the embedded DNS server, record planning, domain checks.

Library modules are imported inside the handlers: the CLI imports every command module
on each run, and these need dnspython only when used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import sys
from pathlib import Path

from mxflow.commands import DEFAULT_RESOLVER, Subparsers, print_json
from mxflow.errors import MxflowError


def register(sub: Subparsers) -> None:
    """Add the `dns` subcommands to the `mxflow` parser."""
    dns_parser = sub.add_parser("dns", help="embedded DNS server; plan and check mail DNS")
    commands = dns_parser.add_subparsers(dest="dns_command", metavar="SUBCOMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="serve zone files (authoritative, UDP and TCP)",
        description="Serve RFC 1035 zone files over UDP and TCP until interrupted. "
        "Names in no zone get REFUSED: the server never recurses.",
    )
    serve.add_argument(
        "--zone", action="append", required=True, metavar="FILE", help="a zone file (repeatable)"
    )
    serve.add_argument(
        "--listen", default=DEFAULT_RESOLVER, help="IP:PORT to bind (default %(default)s)"
    )
    serve.set_defaults(handler=serve_command)

    plan = commands.add_parser(
        "plan",
        help="the records a domain must publish for its mail flow",
        description="Print the records of a topology (see examples/topology.toml) as a "
        "zone-file fragment and as a table.",
    )
    plan.add_argument("--topology", required=True, metavar="FILE", help="topology TOML file")
    plan.add_argument("--scenario", type=int, choices=(1, 2), default=1)
    plan.add_argument(
        "--format", choices=("both", "zone", "table"), default="both", help="what to print"
    )
    plan.add_argument(
        "--json", action="store_true", help="one JSON object per record instead (JSON Lines)"
    )
    plan.add_argument(
        "--zone-dir",
        metavar="DIR",
        help="also write the domain's zone and the lab zones of the other parties here",
    )
    plan.set_defaults(handler=plan_command)

    check = commands.add_parser(
        "check",
        help="check what a domain publishes: scenario, bypass risk, SPF, DMARC, DKIM",
        description="Resolve the domain's mail-flow records and report problems with "
        "severities. Exit status 1 when an error is found.",
    )
    check.add_argument("domain")
    check.add_argument(
        "--resolver", default=DEFAULT_RESOLVER, help="DNS server IP[:PORT] (default %(default)s)"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument(
        "--selector", action="append", default=[], help="DKIM selector to look for (repeatable)"
    )
    check.add_argument(
        "--private-ok", action="store_true", help="do not flag private/loopback SPF addresses"
    )
    check.set_defaults(handler=check_command)


def serve_command(args: argparse.Namespace) -> int:
    from mxflow.dns.resolver import parse_endpoint
    from mxflow.dns.server import EmbeddedDnsServer
    from mxflow.dns.zone import load_zone_file

    try:
        host, port = parse_endpoint(args.listen, default_port=53)
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise MxflowError(f"--listen {args.listen!r}: expected IP:PORT") from exc
    zones = [load_zone_file(path) for path in args.zone]
    origins = [zone.origin for zone in zones]
    for path, origin in zip(args.zone, origins, strict=True):
        if origins.count(origin) > 1:  # only one of them would ever answer
            raise MxflowError(f"{path}: zone {origin} is given more than once")

    async def run() -> None:
        server = EmbeddedDnsServer(zones, host=host, port=port)
        await server.start()
        names = ", ".join(str(z.origin) for z in zones)
        print(f"serving {names} on {server.host}:{server.port} (udp+tcp)", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def plan_command(args: argparse.Namespace) -> int:
    from mxflow.records.plan import lab_zones, plan_records, zone_text
    from mxflow.records.topology import load_topology

    topology = load_topology(args.topology)
    plan = plan_records(topology, args.scenario)
    if args.json:
        for r in plan.records:
            print_json(
                {
                    "domain": plan.domain,
                    "name": r.name,
                    "type": r.rdtype,
                    "ttl": r.ttl,
                    "value": r.value,
                    "purpose": r.purpose,
                }
            )
    elif args.format in {"both", "zone"}:
        print(plan.zone_fragment(), end="")
    if args.format == "both" and not args.json:
        print()
    if args.format in {"both", "table"} and not args.json:
        print(plan.table(), end="")
    if args.zone_dir:
        directory = Path(args.zone_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            written = [directory / f"{plan.domain}.zone"]
            written[0].write_text(plan.zone_fragment())
            for zone in lab_zones(topology):
                path = directory / f"{zone.origin.to_text(omit_final_dot=True)}.zone"
                path.write_text(zone_text(zone))
                written.append(path)
        except OSError as exc:
            raise MxflowError(f"{args.zone_dir}: cannot write zone files: {exc.strerror}") from exc
        print(f"wrote {len(written)} zone files to {directory}", file=sys.stderr)
    return 0


def check_command(args: argparse.Namespace) -> int:
    from mxflow.dns.resolver import resolver_option
    from mxflow.records.check import COMMON_SELECTORS, check_domain

    selectors = tuple(args.selector) or COMMON_SELECTORS
    resolver = resolver_option(args.resolver)
    result = asyncio.run(
        check_domain(args.domain, resolver, selectors=selectors, public=not args.private_ok)
    )
    if args.json:
        json.dump(result.as_dict(), sys.stdout, indent=2)
        print()
    else:
        print(result.table(), end="")
    return 1 if result.has_errors else 0
