"""`mxflow dkim`: make a signing key and its DNS record; sign or verify a message file."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from mxflow.auth.dkim import dkim_sign, verify_dkim
from mxflow.auth.keys import SigningKeyError, generate_key, load_signing_key, split_txt
from mxflow.commands import DEFAULT_RESOLVER, Subparsers, print_json
from mxflow.dns.names import is_domain_name
from mxflow.dns.resolver import resolver_option
from mxflow.errors import MxflowError


def register(sub: Subparsers) -> None:
    """Add the `dkim` subcommands to the `mxflow` parser."""
    parser = sub.add_parser("dkim", help="DKIM keys, signing and verification")
    dkim_sub = parser.add_subparsers(dest="dkim_command", metavar="SUBCOMMAND", required=True)

    keygen = dkim_sub.add_parser(
        "keygen", help="write a new private key and print its DNS TXT record"
    )
    keygen.add_argument("--domain", required=True, help="signing domain (d=)")
    keygen.add_argument("--selector", required=True, help="selector (s=)")
    keygen.add_argument("--ed25519", action="store_true", help="Ed25519 (RFC 8463) instead of RSA")
    keygen.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    keygen.add_argument(
        "--out", help="private key file (default SELECTOR.DOMAIN.key in the current directory)"
    )
    keygen.add_argument("--force", action="store_true", help="overwrite an existing key file")
    keygen.add_argument("--json", action="store_true", help="print one JSON object instead")
    keygen.set_defaults(handler=run_keygen)

    sign = dkim_sub.add_parser("sign", help="print a DKIM-Signature header for a message")
    sign.add_argument("message", help="message file (RFC 5322)")
    sign.add_argument("--domain", required=True)
    sign.add_argument("--selector", required=True)
    sign.add_argument("--key", required=True, help="private key file (PEM or Ed25519 seed)")
    sign.set_defaults(handler=run_sign)

    verify = dkim_sub.add_parser("verify", help="verify every DKIM signature of a message")
    verify.add_argument("message", help="message file (RFC 5322)")
    verify.add_argument(
        "--resolver",
        default=DEFAULT_RESOLVER,
        help="DNS server to ask, IP[:PORT] (default %(default)s)",
    )
    verify.add_argument(
        "--json", action="store_true", help="one JSON object per signature (JSON Lines)"
    )
    verify.set_defaults(handler=run_verify)


def dns_record_text(selector: str, domain: str, record: str) -> str:
    """The zone-file line publishing `record`, split into 255-octet strings."""
    strings = " ".join(f'"{s}"' for s in split_txt(record))
    return f"{selector}._domainkey.{domain}. IN TXT ( {strings} )"


def run_keygen(args: argparse.Namespace) -> int:
    domain = args.domain.strip().rstrip(".").lower()
    selector = args.selector.strip().rstrip(".")
    if not is_domain_name(domain):
        raise MxflowError(f"--domain {args.domain!r}: expected a domain name such as contoso.com")
    if not is_domain_name(selector, min_labels=1):  # RFC 6376 §3.1: a selector may have dots
        raise MxflowError(f"--selector {args.selector!r}: expected a name such as s1 or 2026.eng")
    if not args.ed25519 and not 1024 <= args.bits <= 8192:
        raise MxflowError(f"--bits {args.bits}: use 1024 to 8192 (2048 recommended)")
    path = Path(args.out or f"{selector}.{domain}.key")
    if path.exists() and not args.force:
        raise MxflowError(f"{path} exists; use --force to replace it")
    pem, record = generate_key("ed25519" if args.ed25519 else "rsa", args.bits)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    except OSError as exc:
        raise MxflowError(f"cannot write {path}: {exc.strerror}") from exc
    if args.json:
        print_json(
            {
                "key_file": str(path),
                "name": f"{selector}._domainkey.{domain}",
                "type": "TXT",
                "value": record,
            }
        )
        return 0
    print(f"; private key written to {path}")
    print(dns_record_text(selector, domain, record))
    return 0


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise MxflowError(f"cannot read {what} {path}: {exc.strerror}") from exc


def run_sign(args: argparse.Namespace) -> int:
    raw = _read(args.message, "message")
    try:
        key = load_signing_key(_read(args.key, "key"), source=args.key)
    except SigningKeyError as exc:
        raise MxflowError(str(exc)) from exc
    try:
        name, value = asyncio.run(dkim_sign(raw, args.domain, args.selector, key))
    except ValueError as exc:
        raise MxflowError(str(exc)) from exc
    print(f"{name}: {value}".replace("\r\n", "\n"))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    raw = _read(args.message, "message")
    resolver = resolver_option(args.resolver)
    results = asyncio.run(verify_dkim(raw, resolver))
    status = 0 if any(r.result == "pass" for r in results) else 1
    if args.json:
        for r in results:
            print_json(
                {
                    "result": r.result,
                    "domain": r.domain,
                    "selector": r.selector,
                    "algorithm": r.algorithm,
                    "reason": r.reason,
                }
            )
        return status
    if not results:
        print("dkim=none (message not signed)")
        return 1
    for result in results:
        print(result.ar_part())
    return status
