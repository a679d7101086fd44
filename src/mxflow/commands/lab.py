"""`mxflow lab [run]`: the whole mail flow on loopback, scenarios 1, 2 and 2-ef side by side.

`mxflow lab` alone runs what `make lab` runs: every scenario on the shipped corpus.
`mxflow lab run --scenario 1|2|2-ef|all --corpus DIR --json FILE --keep --topology FILE`
chooses. Works from any folder: the topology and the sample corpus ship in the package.
`--nodes 2` runs scenario 1 with two gateway nodes behind two MX records on one PostgreSQL
and kills one mid-run (docs/lab.md); it needs PostgreSQL's server (exit 3 without it).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from mxflow.commands import Subparsers
from mxflow.errors import MxflowError

SCENARIO_CHOICES = ("1", "2", "2-ef", "all")


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", choices=SCENARIO_CHOICES, default="all")
    p.add_argument("--corpus", metavar="DIR", help="DIR/ham/* and DIR/spam/* (default: sample)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--topology", metavar="FILE", help="an edited copy of the lab's topology")
    p.add_argument(
        "--keep",
        action="store_true",
        help="then start the last scenario again and leave it running, with the web UI",
    )
    p.add_argument(
        "--ui",
        metavar="IP:PORT",
        default="127.0.0.1:8025",
        help="where --keep serves the admin web UI (default 127.0.0.1:8025)",
    )
    p.add_argument("--dir", metavar="DIR", help="where the nodes' files go (default: a temp dir)")
    p.add_argument(
        "--nodes",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: scenario 1 with two gateway nodes behind two MX records, one PostgreSQL,"
        " one node killed mid-run (needs Debian's postgresql)",
    )
    p.add_argument(
        "--equal-mx",
        action="store_true",
        help="with --nodes 2: both MX records at preference 10 (default: 10 and 20)",
    )
    p.add_argument("--verbose", action="store_true", help="show the nodes' logs")


def register(sub: Subparsers) -> None:
    """Add the `lab` subcommand (and `lab run`) to the `mxflow` parser."""
    p = sub.add_parser("lab", help="run scenarios 1, 2 and 2-ef on loopback and report")
    _options(p)
    p.set_defaults(handler=run)
    lsub = p.add_subparsers(dest="lab_command", metavar="SUBCOMMAND")
    r = lsub.add_parser("run", help="run the lab (the default)")
    _options(r)
    r.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from mxflow.dns.resolver import parse_endpoint
    from mxflow.lab.corpus import default_corpus
    from mxflow.lab.run import SCENARIOS, main, main_nodes

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    corpus = Path(args.corpus) if args.corpus else default_corpus()
    if args.nodes > 1 and (args.scenario not in ("1", "all") or args.keep):
        raise MxflowError(f"--nodes {args.nodes} runs scenario 1 (no --keep); drop --scenario")
    if args.equal_mx and args.nodes == 1:
        raise MxflowError("--equal-mx needs --nodes 2")
    with tempfile.TemporaryDirectory(prefix="mxflow-lab-") as tmp:
        workdir = Path(args.dir).resolve() if args.dir else Path(tmp)
        if args.nodes > 1:
            return main_nodes(
                corpus,
                workdir,
                json_file=Path(args.json) if args.json else None,
                topology_file=Path(args.topology) if args.topology else None,
                equal_mx=args.equal_mx,
            )
        return main(
            scenarios,
            corpus,
            workdir,
            json_file=Path(args.json) if args.json else None,
            topology_file=Path(args.topology) if args.topology else None,
            keep=args.keep,
            ui=parse_endpoint(args.ui, 8025),
        )
