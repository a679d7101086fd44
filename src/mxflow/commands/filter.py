"""`mxflow filter check | learn`: score message files, train the content classifier.

    mxflow filter check PATH... [--config NODE.toml] [--ip IP --helo NAME --mail-from ADDR]
                                [--resolver IP:PORT] [--clamd ADDR] [--json]
    mxflow filter learn --spam|--ham PATH... [--config NODE.toml | --model FILE] [--unlearn]

PATH is a message file, a folder of them, or a Maildir (its cur/ and new/); `learn` also
takes mbox files. Without a resolver the DNS-based checks are skipped, and the output says
so. Learning a message already learnt as that class, or unlearning one never learnt, leaves
the model's counts as they are (`bayes.Trainer` keeps a ledger beside the model).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from mxflow.commands import Subparsers
from mxflow.errors import MxflowError
from mxflow.mail import MessageContext, Phase, Verdict


def register(sub: Subparsers) -> None:
    """Add the `filter` subcommands to the `mxflow` parser."""
    p = sub.add_parser("filter", help="score messages with the spam/malware filter; train it")
    fsub = p.add_subparsers(dest="filter_command", metavar="SUBCOMMAND", required=True)
    check = fsub.add_parser("check", help="score message files: score, SCL, action, symbols")
    check.add_argument("paths", nargs="+", metavar="PATH", help="file, folder or Maildir")
    check.add_argument("--config", metavar="NODE.toml", help="use this node's [filter] policy")
    check.add_argument("--ip", default="192.0.2.1", help="client IP (default 192.0.2.1)")
    check.add_argument("--helo", default="", help="HELO name the client gave")
    check.add_argument("--mail-from", default="", help="envelope sender")
    check.add_argument("--rcpt", action="append", default=[], help="envelope recipient")
    check.add_argument("--resolver", metavar="IP:PORT", help="DNS server for DNS-based checks")
    check.add_argument("--clamd", metavar="ADDR", help="clamd: unix:/path or HOST:PORT")
    check.add_argument("--json", action="store_true", help="one JSON object per message")
    check.set_defaults(handler=run_check)

    learn = fsub.add_parser("learn", help="train the classifier with messages of one class")
    cls = learn.add_mutually_exclusive_group(required=True)
    cls.add_argument("--spam", action="store_true", help="the messages are spam")
    cls.add_argument("--ham", action="store_true", help="the messages are not spam")
    learn.add_argument("paths", nargs="+", metavar="PATH")
    where = learn.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="NODE.toml", help="train this node's model")
    where.add_argument("--model", metavar="FILE", help="train this model file")
    learn.add_argument("--unlearn", action="store_true", help="undo an earlier learn")
    learn.set_defaults(handler=run_learn)


def message_files(paths: list[str]) -> Iterator[Path]:
    """Every message file under `paths`: files as given, folders and Maildirs walked."""
    for text in paths:
        path = Path(text)
        if path.is_file():
            yield path
        elif path.is_dir():
            if (path / "cur").is_dir() and (path / "new").is_dir():
                roots = [path / "new", path / "cur"]
            else:
                roots = [path]
            for root in roots:
                for child in sorted(root.rglob("*")):
                    parts = child.relative_to(root).parts
                    if child.is_file() and not any(p.startswith(".") for p in parts):
                        yield child
        elif path.exists():
            raise MxflowError(f"{text}: not a message file, folder or Maildir")
        else:
            raise MxflowError(f"{text}: no such file or folder")


def read_message(path: Path) -> bytes:
    """A message file with CRLF line ends, as the SMTP server hands messages to checks."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MxflowError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def verdict_json(path: Path, verdict: Verdict, report: str = "") -> dict[str, object]:
    return {
        "path": str(path),
        "score": verdict.score,
        "scl": verdict.scl,
        "action": verdict.action.value,
        "reason": verdict.reason,
        "report": report,
        "symbols": [
            {"name": s.name, "score": s.score, "detail": s.detail} for s in verdict.symbols
        ],
        "headers": [[name, value] for name, value in verdict.headers],
    }


def antispam_report(verdict: Verdict, policy: object, client_ip: str) -> str:
    """The X-Forefront-Antispam-Report-style summary (SFV, SCL, CIP) of any verdict, also
    of those (quarantine, reject) whose message never gets the header."""
    from mxflow.checks.verdict import spam_headers
    from mxflow.config.filter import FilterPolicy

    for name, value in verdict.headers:
        if name == "X-Forefront-Antispam-Report":
            return value
    assert isinstance(policy, FilterPolicy)
    return dict(spam_headers(verdict, policy, client_ip))["X-Forefront-Antispam-Report"]


def _validate(args: argparse.Namespace) -> None:
    """Bad option values as one clear line, before any message is read."""
    import ipaddress

    from mxflow.config.filter import ClamdAddress

    try:
        ipaddress.ip_address(args.ip)
    except ValueError:
        raise MxflowError(f"--ip {args.ip!r}: expected an IPv4 or IPv6 address") from None
    if args.clamd:
        try:
            ClamdAddress(args.clamd).validate()
        except ValueError as exc:
            raise MxflowError(f"--clamd {exc}") from None


def _pipeline(args: argparse.Namespace) -> object:
    from mxflow.checks.pipeline import FilterPipeline
    from mxflow.config.filter import FilterPolicy
    from mxflow.dns.resolver import resolver_option

    resolver = resolver_option(args.resolver) if args.resolver else None
    if args.config:
        from mxflow.checks.node import node_pipeline, node_policy
        from mxflow.config import load_config

        config = load_config(args.config)
        if resolver is None and config.dns_resolver:
            # The node's own `[dns] resolver`, as the running node would use it.
            resolver = resolver_option(config.dns_resolver, "[dns] resolver")
        with _model_errors(node_policy(config).bayes_model):
            return node_pipeline(config, resolver, clamd=args.clamd)
    return FilterPipeline(FilterPolicy(), resolver=resolver, clamd=args.clamd)


@contextlib.contextmanager
def _model_errors(path: Path | None) -> Iterator[None]:
    """A model file that is not one (truncated, not gzip, a folder) as one clear line."""
    try:
        yield
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise MxflowError(f"{path}: not a usable classifier model ({reason})") from None


async def _check(args: argparse.Namespace) -> int:
    from mxflow.checks.pipeline import FilterPipeline

    _validate(args)
    files = list(message_files(args.paths))  # a wrong path is reported before any output
    if not files:
        raise MxflowError("no message files found")
    pipeline = _pipeline(args)
    assert isinstance(pipeline, FilterPipeline)
    if pipeline.skipped and not args.json:
        print(f"note: no --resolver: DNS-based checks skipped ({', '.join(pipeline.skipped)})")
    for path in files:
        ctx = MessageContext(
            client_ip=args.ip,
            helo=args.helo,
            mail_from=args.mail_from,
            rcpt_tos=list(args.rcpt),
            raw=read_message(path),
        )
        verdict = await pipeline.evaluate(ctx, Phase.DATA)
        report = antispam_report(verdict, pipeline.policy, args.ip)
        if args.json:
            print(json.dumps(verdict_json(path, verdict, report)), flush=True)
            continue
        reason = f" ({verdict.reason})" if verdict.reason else ""
        print(
            f"{path}: score {verdict.score:.2f}, SCL {verdict.scl}, "
            f"action {verdict.action.value}{reason}"
        )
        print(f"    report: {report}")
        for symbol in verdict.symbols:
            detail = f"  {symbol.detail}" if symbol.detail else ""
            print(f"    {symbol.name:24} {symbol.score:7.2f}{detail}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    return asyncio.run(_check(args))


def learn_messages(paths: list[str]) -> Iterator[bytes]:
    """Every message under `paths` for learning: message files, folders, Maildirs (cur/ and
    new/) and mbox files (a file that starts with a `From ` line), each with CRLF line ends."""
    for path in message_files(paths):
        if _is_mbox(path):
            yield from _mbox_messages(path)
        else:
            yield read_message(path)


def _is_mbox(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(5) == b"From "
    except OSError:
        return False  # read_message says why


def _mbox_messages(path: Path) -> Iterator[bytes]:
    import mailbox

    box = mailbox.mbox(path, create=False)
    try:
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            yield raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    finally:
        box.close()


def run_learn(args: argparse.Namespace) -> int:
    from mxflow.checks.bayes import Trainer

    if args.config:
        from mxflow.checks.node import node_trainer
        from mxflow.config import load_config

        trainer = node_trainer(load_config(args.config))
    else:
        trainer = Trainer(Path(args.model))
    messages = list(learn_messages(args.paths))
    if not messages:
        raise MxflowError("no message files found")
    with _model_errors(trainer.path):
        model, outcomes = trainer.train_many(messages, args.spam, unlearn=args.unlearn)
    verb = "unlearnt" if args.unlearn else "learnt"
    kind = "spam" if args.spam else "ham"
    done = outcomes["unlearnt"] if args.unlearn else outcomes["learnt"] + outcomes["relearnt"]
    notes = [f"{n} {what}" for what, n in sorted(outcomes.items()) if what != verb and n]
    note = f" ({', '.join(notes)})" if notes else ""
    print(
        f"{verb} {done} message(s) as {kind}{note}; {getattr(trainer, 'where', trainer.path)}: "
        f"{model.nham} ham, {model.nspam} spam, {len(model.counts)} tokens"
    )
    return 0
