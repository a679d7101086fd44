"""What a lab sender does to a corpus message: CRLF line ends, its own From domain, its
own DKIM signature (old ones removed), its Received line and X-Lab-Id; the rest stays."""

from __future__ import annotations

from mxflow.auth.dkim import verify_dkim
from mxflow.auth.txt import ResolverTxtLookup
from mxflow.dns.zone import Zone
from mxflow.lab.corpus import prepare, split_message
from mxflow.lab.run import default_topology
from mxflow.lab.world import World
from mxflow.records.topology import load_topology
from tests.dnsserver import serve_zones

CORPUS_MESSAGE = (
    b"From alice@example.org Mon Sep  2 12:00:00 2002\n"
    b"Return-Path: <alice@example.org>\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=old; b=AAAA; bh=BBBB\n"
    b'From: "Alice A." <alice.a@example.org>\n'
    b"To: list@example.net\n"
    b"Subject: a long\n"
    b"\tfolded subject\n"
    b"\n"
    b"Body line one.\n"
    b".leading dot\n"
)


async def test_a_corpus_message_is_sent_as_the_lab_sender_would() -> None:
    world = World(load_topology(default_topology()))
    (peer,) = [p for p in world.peers if p.domain == "fabrikam.test" and p.kind != "spoof"]
    raw, author = prepare(CORPUS_MESSAGE, peer, "ham/one")
    assert author == "alice.a@fabrikam.test"
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only
    fields, body = split_message(raw)
    names = [f.split(b":", 1)[0].lower() for f in fields]
    assert names[:3] == [b"dkim-signature", b"received", b"x-lab-id"]
    assert names.count(b"dkim-signature") == 1 and b"d=fabrikam.test" in fields[0]
    assert b'From: "Alice A." <alice.a@fabrikam.test>' in fields
    assert b"Subject: a long\r\n\tfolded subject" in fields
    assert b"Return-Path: <alice@example.org>" in fields  # the rest of the header stays
    assert body == b"Body line one.\r\n.leading dot\r\n"
    assert not raw.startswith(b"From ")  # the mbox separator is not a header
    async with serve_zones(world.zones(1)) as server:
        results = await verify_dkim(raw, ResolverTxtLookup(server.resolver()))
    assert [r.result for r in results] == ["pass"]


def test_every_lab_zone_is_served_and_the_blocklist_lists_the_spam_sources() -> None:
    world = World(load_topology(default_topology()))
    zones: dict[str, Zone] = {z.origin.to_text().rstrip("."): z for z in world.zones(2)}
    assert {"contoso.com", "bl.lab.test", "protection.outlook.com", "esp-mailer.test"} <= set(zones)
    listed = {n.to_text() for n in zones["bl.lab.test"].records}
    for peer in world.peers:
        reversed_ip = ".".join(reversed(peer.ip.split("."))) + ".bl.lab.test."
        assert (reversed_ip in listed) == (peer.kind in ("spam", "bypass")), peer.name
