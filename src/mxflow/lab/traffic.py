"""What the lab sends in one scenario: the corpus and the synthetic classes, inbound and
outbound, each message tagged with its class (the truth the report compares against).

Inbound: every ham file of the corpus from a legitimate sender (round robin), every spam
file from a spam source; then a few messages of each synthetic class (list, spoof,
malware, the direct-to-host bypass). Outbound: Contoso's users writing to the Internet.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from mxflow.lab.corpus import LabMessage, corpus_files, malware, prepare, synthetic
from mxflow.lab.world import CONTOSO_MAILBOXES, OUTBOUND_DOMAINS, Peer, World

SYNTHETIC_PER_PEER = {"list": 6, "spoof": 4, "malware": 6, "bypass": 3}
OUTBOUND_MESSAGES = 12


def inbound(world: World, corpus: Path) -> list[LabMessage]:
    domain = world.topology.domain
    boxes = itertools.cycle(f"{b}@{domain}" for b in CONTOSO_MAILBOXES[:4])
    files = corpus_files(corpus)
    out: list[LabMessage] = []
    for kind, cls in (("ham", "legitimate"), ("spam", "spam")):
        peers = itertools.cycle(world.of_kind(cls))
        for path in files[kind]:
            peer, rcpt = next(peers), next(boxes)
            lab_id = f"{kind}/{path.name}"
            raw, author = prepare(path.read_bytes(), peer, lab_id)
            out.append(LabMessage(lab_id, cls, peer, author, rcpt, raw))
    for kind, count in SYNTHETIC_PER_PEER.items():
        for peer in world.of_kind(kind):
            for n in range(count):
                rcpt = next(boxes)
                out.append(_synthetic(peer, kind, n, rcpt))
    return out


def _synthetic(peer: Peer, kind: str, n: int, rcpt: str) -> LabMessage:
    lab_id = f"{kind}/{peer.ip}/{n}"
    if kind == "malware":
        raw, author = prepare(malware(rcpt, n), peer, lab_id, from_local="billing")
    elif kind == "spoof":
        text = synthetic(f"Urgent wire transfer {n}", "Please pay the attached today.", to=rcpt)
        raw, author = prepare(text, peer, lab_id, from_local="ceo")
    elif kind == "list":
        text = synthetic(
            f"[adventure-works] meeting notes {n}", "Notes attached.\n--\nlist footer", to=rcpt
        )
        raw, author = prepare(text, peer, lab_id, from_local="discuss")
    else:
        text = synthetic(f"Cheap watches {n}", "Buy now, limited offer!!!", to=rcpt)
        raw, author = prepare(text, peer, lab_id, from_local="promo")
    return LabMessage(lab_id, kind, peer, author, rcpt, raw)


def outbound(world: World) -> list[LabMessage]:
    """Contoso's users write to the Internet (the host signs as contoso.com)."""
    domain = world.topology.domain
    out = []
    for n in range(OUTBOUND_MESSAGES):
        user = CONTOSO_MAILBOXES[n % 4]
        rcpt = f"partner{n}@{OUTBOUND_DOMAINS[n % len(OUTBOUND_DOMAINS)]}"
        lab_id = f"outbound/{n}"
        body = synthetic(f"Project update {n}", "The numbers are attached as discussed.", to=rcpt)
        raw = body.replace(b"someone@example.invalid", f"{user}@{domain}".encode(), 1)
        raw = f"X-Lab-Id: {lab_id}\r\n".encode() + raw
        out.append(LabMessage(lab_id, "outbound", None, f"{user}@{domain}", rcpt, raw))
    return out
