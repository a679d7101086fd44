"""`mxflow lab [run]`: the whole mail flow on loopback, scenarios 1, 2 and 2-ef side by side.

`mxflow lab` alone runs what `make lab` runs: every scenario on the shipped corpus.
`mxflow lab run --scenario 1|2|2-ef|all --corpus DIR --json FILE --keep --topology FILE`
chooses. Works from any folder: the topology and the sample corpus ship in the package.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from mxflow.commands import Subparsers

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
    from mxflow.lab.run import SCENARIOS, main

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    corpus = Path(args.corpus) if args.corpus else default_corpus()
    with tempfile.TemporaryDirectory(prefix="mxflow-lab-") as tmp:
        workdir = Path(args.dir).resolve() if args.dir else Path(tmp)
        return main(
            scenarios,
            corpus,
            workdir,
            json_file=Path(args.json) if args.json else None,
            topology_file=Path(args.topology) if args.topology else None,
            keep=args.keep,
            ui=parse_endpoint(args.ui, 8025),
        )
