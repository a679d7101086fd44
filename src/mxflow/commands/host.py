"""`mxflow host ...`: the mailbox host's directory (domains, mailboxes, aliases, groups),
its export for the gateway, and a dry run of the mail flow rules.

Every command reads the node's TOML (`--config`, `--data-dir` as for `mxflow serve`) and
first copies the entries declared there into the directory, so they are in force without
verification and cannot be edited here. Exit status: 0 done, 1 the thing asked about is
not there or not (yet) true (a domain whose TXT record is not found, an unknown address),
2 an error (bad input, a change the directory refuses), one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mxflow.commands import Subparsers
from mxflow.config import NodeConfig, load_config
from mxflow.errors import MxflowError
from mxflow.store.directory import (
    Directory,
    DomainEntry,
    RecipientEntry,
    open_directory,
    validate_password,
)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", required=True, metavar="FILE", help="the node's TOML file")
    common.add_argument("--data-dir", metavar="DIR", help="as `mxflow serve --data-dir`")
    return common


def register(sub: Subparsers) -> None:
    """Add the `host` subcommands to the `mxflow` parser."""
    p = sub.add_parser("host", help="the mailbox host: domains, mailboxes, groups, rules")
    hsub = p.add_subparsers(dest="host_command", metavar="AREA", required=True)
    common = _common()
    _register_domain(hsub, common)
    _register_mailbox(hsub, common)
    _register_alias(hsub, common)
    _register_group(hsub, common)
    d = hsub.add_parser("directory", help="the directory as a whole")
    dsub = d.add_subparsers(dest="directory_command", metavar="SUBCOMMAND", required=True)
    exp = dsub.add_parser(
        "export", parents=[common], help="write the valid recipients for the gateway"
    )
    exp.add_argument("file", metavar="FILE")
    exp.add_argument("--domain", help="only this domain")
    exp.set_defaults(handler=run_export)
    learn = hsub.add_parser(
        "learn-folders",
        parents=[common],
        help="train the filter on what users moved into or out of Junk (the node does this"
        " every [host] learn_interval)",
    )
    learn.set_defaults(handler=run_learn_folders)
    r = hsub.add_parser("rule", help="mail flow rules")
    rsub = r.add_subparsers(dest="rule_command", metavar="SUBCOMMAND", required=True)
    test = rsub.add_parser(
        "test", parents=[common], help="show which rules match MESSAGE, what they would do"
    )
    test.add_argument("message", metavar="MESSAGE", help="an RFC 5322 message file")
    test.add_argument("--connector", help="the inbound connector it arrived through")
    test.add_argument("--client-ip", help="the connecting client (picks the connector too)")
    test.add_argument("--mail-from", default="", help="the envelope sender")
    test.add_argument("--rcpt", action="append", default=[], help="a recipient (repeatable)")
    test.add_argument("--scl", type=int, default=0, help="the SCL before the rules (default 0)")
    test.add_argument("--json", action="store_true")
    test.set_defaults(handler=run_rule_test)


def _register_domain(hsub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = hsub.add_parser("domain", help="accepted domains")
    s = p.add_subparsers(dest="domain_command", metavar="SUBCOMMAND", required=True)
    add = s.add_parser("add", parents=[common], help="add a domain; prints its MS= token")
    add.add_argument("domain")
    add.add_argument("--type", default="authoritative", choices=("authoritative", "internal_relay"))
    add.set_defaults(handler=run_domain_add)
    verify = s.add_parser("verify", parents=[common], help="look for the token in DNS (TXT)")
    verify.add_argument("domain")
    verify.set_defaults(handler=run_domain_verify)
    ls = s.add_parser("list", parents=[common], help="every accepted domain and its state")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_domain_list)


def _register_mailbox(hsub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = hsub.add_parser("mailbox", help="mailboxes")
    s = p.add_subparsers(dest="mailbox_command", metavar="SUBCOMMAND", required=True)
    add = s.add_parser("add", parents=[common], help="add a mailbox (password: prompted)")
    add.add_argument("address")
    add.add_argument("--name", default="", help="display name")
    _password_options(add)
    add.add_argument("--no-password", action="store_true", help="no login for now")
    add.set_defaults(handler=run_add, kind="mailbox")
    pw = s.add_parser("passwd", parents=[common], help="set a mailbox's submission password")
    pw.add_argument("address")
    _password_options(pw)
    pw.set_defaults(handler=run_passwd)
    ls = s.add_parser("list", parents=[common])
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_list, kind="mailbox")
    rm = s.add_parser("remove", parents=[common])
    rm.add_argument("address")
    rm.set_defaults(handler=run_remove, kind="mailbox")
    show = s.add_parser("show", parents=[common], help="any address: what it is, where it goes")
    show.add_argument("address")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=run_show)


def _password_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (for scripts); never argv",
    )


def _read_password(args: argparse.Namespace, *, required: bool) -> str | None:
    """The new password: the first line of stdin with --password-stdin, else asked twice
    at the terminal. None when there is no terminal to ask and `required` is false."""
    if args.password_stdin:
        line = sys.stdin.readline(4096).rstrip("\r\n")
        if not line:
            raise MxflowError("--password-stdin: the first line of stdin is empty")
        return line
    if not sys.stdin.isatty():
        if required:
            raise MxflowError("no terminal to ask for the password: use --password-stdin")
        return None
    first = getpass.getpass("New password: ")
    if not first and not required:
        return None
    if getpass.getpass("Repeat password: ") != first:
        raise MxflowError("the passwords differ; nothing changed")
    return first


def run_passwd(args: argparse.Namespace) -> int:
    password = _read_password(args, required=True)
    assert password is not None
    _, directory = _directory(args)
    with directory:
        entry = directory.set_password(args.address, password)
    print(f"password set for {entry.address}")
    return 0


def _register_alias(hsub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = hsub.add_parser("alias", help="aliases (one address forwarding to another)")
    s = p.add_subparsers(dest="alias_command", metavar="SUBCOMMAND", required=True)
    add = s.add_parser("add", parents=[common])
    add.add_argument("address")
    add.add_argument("target")
    add.set_defaults(handler=run_add, kind="alias")
    ls = s.add_parser("list", parents=[common])
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_list, kind="alias")
    rm = s.add_parser("remove", parents=[common])
    rm.add_argument("address")
    rm.set_defaults(handler=run_remove, kind="alias")


def _register_group(hsub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = hsub.add_parser("group", help="distribution groups")
    s = p.add_subparsers(dest="group_command", metavar="SUBCOMMAND", required=True)
    add = s.add_parser("add", parents=[common])
    add.add_argument("address")
    add.add_argument("members", nargs="*", metavar="MEMBER")
    add.set_defaults(handler=run_add, kind="group")
    ls = s.add_parser("list", parents=[common])
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_list, kind="group")
    rm = s.add_parser("remove", parents=[common])
    rm.add_argument("address")
    rm.set_defaults(handler=run_remove, kind="group")
    mem = s.add_parser("members", parents=[common], help="list, --add or --remove members")
    mem.add_argument("address")
    mem.add_argument("--add", action="append", default=[], metavar="MEMBER")
    mem.add_argument("--remove", action="append", default=[], metavar="MEMBER")
    mem.add_argument("--json", action="store_true")
    mem.set_defaults(handler=run_members)


def _directory(args: argparse.Namespace) -> tuple[NodeConfig, Directory]:
    config = load_config(args.config, data_dir=args.data_dir)
    return config, open_directory(config)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def run_domain_add(args: argparse.Namespace) -> int:
    _, directory = _directory(args)
    with directory:
        entry = directory.add_domain(args.domain, args.type)
    print(f"{entry.domain}: added ({entry.type}), pending verification")
    print(f"  publish this TXT record at {entry.domain}:  {entry.token}")
    print(f"  then run: mxflow host domain verify {entry.domain} --config {args.config}")
    return 0


def run_domain_verify(args: argparse.Namespace) -> int:
    config, directory = _directory(args)
    with directory:
        entry = directory.domain(args.domain)
        if entry is None:
            raise MxflowError(f"{args.domain} is not a domain here; add it first")
        if entry.accepts_mail:
            print(f"{entry.domain}: verified")
            return 0
        if not config.dns_resolver:
            raise MxflowError(f'{config.file}: no [dns] resolver = "IP[:PORT]" to look up TXT')
        records = asyncio.run(_txt(config.dns_resolver, entry.domain))
        entry = directory.verify_domain(entry.domain, records)
    if entry.accepts_mail:
        print(f"{entry.domain}: verified; it accepts mail now")
        return 0
    found = "; ".join(repr(r) for r in records) or "no TXT records"
    print(f"{entry.domain}: still pending: {entry.token} not found ({found})")
    return 1


async def _txt(resolver_text: str, domain: str) -> list[str]:
    from mxflow.auth.txt import DnsTempError, ResolverTxtLookup
    from mxflow.dns.resolver import resolver_option

    lookup = ResolverTxtLookup(resolver_option(resolver_text, "[dns] resolver"))
    try:
        answer = await lookup.txt(domain)
    except DnsTempError as exc:
        raise MxflowError(f"{domain}: {exc}; try again later") from None
    return list(answer.records)


def _domain_json(entry: DomainEntry) -> dict[str, Any]:
    return asdict(entry) | {"accepts_mail": entry.accepts_mail}


def run_domain_list(args: argparse.Namespace) -> int:
    _, directory = _directory(args)
    with directory:
        domains = directory.domains()
    if args.json:
        _print_json([_domain_json(d) for d in domains])
        return 0
    for d in domains:
        token = f"  token {d.token}" if d.state != "verified" else ""
        print(f"{d.domain}  {d.type}  {d.state}  ({d.source}){token}")
    return 0


def _describe(entry: RecipientEntry) -> str:
    if entry.kind == "alias":
        return f"{entry.address} -> {entry.target}  ({entry.source})"
    if entry.kind == "group":
        return f"{entry.address}  {len(entry.members)} member(s)  ({entry.source})"
    name = f"  {entry.display_name}" if entry.display_name else ""
    return f"{entry.address}{name}  ({entry.source})"


def run_add(args: argparse.Namespace) -> int:
    _, directory = _directory(args)
    with directory:
        if args.kind == "mailbox":
            password = None if args.no_password else _read_password(args, required=False)
            if password is not None:
                validate_password(password)  # before the mailbox exists: all or nothing
            entry = directory.add_mailbox(args.address, args.name)
            if password is not None:
                directory.set_password(entry.address, password)
                print(f"password set for {entry.address}")
        elif args.kind == "alias":
            entry = directory.add_alias(args.address, args.target)
        else:
            entry = directory.add_group(args.address, args.members)
        domain = directory.domain(entry.address.rpartition("@")[2])
    print(f"added {entry.kind} {_describe(entry)}")
    if domain is not None and not domain.accepts_mail:
        print(f"  note: {domain.domain} is pending verification; no mail is accepted for it yet")
    return 0


def run_list(args: argparse.Namespace) -> int:
    _, directory = _directory(args)
    with directory:
        entries = directory.recipients(args.kind)
    if args.json:
        _print_json([asdict(e) for e in entries])
    else:
        for e in entries:
            print(_describe(e))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    _, directory = _directory(args)
    with directory:
        entry = directory.remove(args.address, args.kind)
    print(f"removed {entry.kind} {entry.address}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    _, directory = _directory(args)
    with directory:
        entry = directory.recipient(args.address)
        expansion = directory.expand(args.address)
    if args.json:
        _print_json({"entry": asdict(entry) if entry else None, "expansion": asdict(expansion)})
        return 0 if entry else 1
    if entry is None:
        print(f"{expansion.address}: no such recipient ({expansion.status})")
        return 1
    print(f"{entry.kind} {_describe(entry)}")
    for source, targets in expansion.expanded:
        print(f"  {source} expands to {', '.join(targets)}")
    print(f"  delivers to: {', '.join(expansion.mailboxes) or 'no mailbox here'}")
    if expansion.external:
        print(f"  relays to: {', '.join(expansion.external)}")
    return 0


def run_members(args: argparse.Namespace) -> int:
    _, directory = _directory(args)
    with directory:
        if args.add or args.remove:
            entry = directory.change_members(args.address, add=args.add, remove=args.remove)
        else:
            found = directory.recipient(args.address)
            if found is None or found.kind != "group":
                print(f"no group {args.address!r}", file=sys.stderr)
                return 1
            entry = found
    if args.json:
        _print_json(list(entry.members))
    else:
        for member in entry.members:
            print(member)
    return 0


def run_export(args: argparse.Namespace) -> int:
    _, directory = _directory(args)
    with directory:
        count = directory.export(Path(args.file), args.domain)
    print(f"{args.file}: {count} valid recipient(s)")
    return 0


def _read_message(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise MxflowError(f"{path}: cannot read the message ({exc.strerror})") from None


def _connector_for(config: NodeConfig, args: argparse.Namespace) -> str | None:
    if args.connector is not None:
        if not any(c.name == args.connector for c in config.inbound_connectors):
            names = ", ".join(c.name for c in config.inbound_connectors) or "none"
            raise MxflowError(f"--connector {args.connector!r}: no such connector ({names})")
        return str(args.connector)
    if args.client_ip:
        for connector in config.inbound_connectors:
            if connector.matches(args.client_ip, ()):
                return connector.name
    return None


def run_rule_test(args: argparse.Namespace) -> int:
    from mxflow.intake.rules import RuleInput, describe_actions, evaluate_rules
    from mxflow.intake.skiplist import recover_sender

    config = load_config(args.config, data_dir=args.data_dir)
    raw = _read_message(args.message)
    client_ip = args.client_ip or "0.0.0.0"
    connector = _connector_for(config, args)
    rcpts = [r.strip().lower() for r in args.rcpt]
    ef = recover_sender(
        raw,
        client_ip=client_ip,
        client_helo="",
        settings=config.host.ef_for(connector),
        private_ranges=config.host.private_ranges,
        rcpt_tos=rcpts,
    )
    rules = config.host.mail_flow_rules
    inp = RuleInput(raw, ef.sender_ip, args.mail_from, rcpts, connector, args.scl)
    decision = evaluate_rules(rules, inp)
    stopped = False
    rows: list[dict[str, Any]] = []
    for rule in rules:
        status = "not evaluated" if stopped else "matched" if rule.name in decision.matched else ""
        stopped = stopped or rule.name == decision.stopped_by
        rows.append(
            {
                "name": rule.name,
                "priority": rule.priority,
                "status": status or "no match",
                "actions": describe_actions(rule),
            }
        )
    if args.json:
        _print_json(
            {
                "connector": connector,
                "sender_ip": ef.sender_ip,
                "enhanced_filtering": ef.reason,
                "rules": rows,
                "decision": asdict(decision),
            }
        )
        return 0
    print(f"connector: {connector or 'none'}; rules test sender IP {ef.sender_ip}")
    if ef.reason:
        print(f"enhanced filtering: {ef.reason}")
    for row in rows:
        what = f" -> {'; '.join(row['actions'])}" if row["status"] == "matched" else ""
        print(f"  [{row['priority']}] {row['name']}: {row['status']}{what}")
    if not rules:
        print("  no [[mail_flow_rules]] in the config")
    scl = "unchanged" if decision.scl is None else str(decision.scl)
    print(f"result: SCL {scl}; {len(decision.matched)} rule(s) matched")
    return 0


def run_learn_folders(args: argparse.Namespace) -> int:
    from mxflow.delivery.feedback import learn_for_node

    config = load_config(args.config, data_dir=args.data_dir)
    if config.filter is None:
        print("mxflow: this node has no [filter]: nothing to train", file=sys.stderr)
        return 2
    found = learn_for_node(config)
    print(
        f"learnt {found.ham} ham (moved out of Junk), {found.spam} spam (moved into Junk)"
        f" from {found.seen} new message file(s)"
    )
    return 0
