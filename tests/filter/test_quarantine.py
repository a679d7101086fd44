"""The quarantine: durable store, list / show / release / delete / expire, traced releases."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxflow.checks.pipeline import FilterPipeline
from mxflow.commands.quarantine import smtp_reinject
from mxflow.errors import MxflowError
from mxflow.mail import Action, MessageContext, Phase, Symbol, Verdict
from mxflow.store.quarantine import DAY, RELEASED_HEADER, Quarantine, QuarantineError
from tests.filter.helpers import SmtpSink, message

SPAM_VERDICT = Verdict(
    action=Action.QUARANTINE,
    score=11.5,
    scl=7,
    reason="spam score 11.5 (BAYES_SPAM)",
    symbols=[Symbol("BAYES_SPAM", 11.5, "p=0.999")],
)
MALWARE_VERDICT = Verdict(
    action=Action.QUARANTINE,
    score=20.0,
    scl=9,
    reason="malware: Eicar-Test-Signature",
    symbols=[Symbol("CLAM_VIRUS", 20.0, "Eicar-Test-Signature")],
)


def ctx(subject: str = "Cheap pills") -> MessageContext:
    return MessageContext(
        client_ip="127.66.0.9",
        mail_from="spammer@bad.example",
        rcpt_tos=["bob@contoso.com", "carol@contoso.com"],
        raw=message("Buy now\n", subject=subject),
        queue_id="Q123",
    )


async def test_quarantined_message_is_stored_with_its_verdict(tmp_path: Path) -> None:
    q = Quarantine(tmp_path / "q")
    qid = await q.quarantine(ctx(), SPAM_VERDICT)
    assert q.path_of(qid).read_bytes() == ctx().raw
    (entry,) = q.list()
    assert entry.id == qid and entry.kind == "spam" and entry.state == "held"
    assert entry.rcpt_tos == ["bob@contoso.com", "carol@contoso.com"]
    assert entry.subject == "Cheap pills" and entry.message_id == "<m1.test@example.org>"
    assert entry.symbols == [("BAYES_SPAM", 11.5, "p=0.999")]
    assert entry.expires - entry.ts == pytest.approx(15 * DAY)
    shown, raw = Quarantine(tmp_path / "q").show(qid)  # a new instance reads the same store
    assert shown == entry and raw == ctx().raw


async def test_retention_is_longer_for_malware_and_expire_deletes(tmp_path: Path) -> None:
    q = Quarantine(tmp_path)
    spam = q.store(ctx(), SPAM_VERDICT, now=1_000_000.0)
    malware = q.store(ctx(), MALWARE_VERDICT, now=1_000_000.0)
    assert q.get(malware).kind == "malware"
    assert q.get(malware).expires - q.get(malware).ts == pytest.approx(30 * DAY)
    assert q.expire(now=1_000_000.0 + 16 * DAY) == [spam]
    assert not q.path_of(spam).exists()
    assert [e.id for e in q.list()] == [malware]
    assert q.expire(now=1_000_000.0 + 31 * DAY) == [malware]
    assert q.list() == []


async def test_release_reinjects_to_the_original_recipients_and_is_traced(tmp_path: Path) -> None:
    events: list[tuple[str, str, str]] = []
    learnt: list[tuple[bytes, bool]] = []
    q = Quarantine(tmp_path, on_event=lambda e, ev, d: events.append((e.id, ev, d)))
    qid = await q.quarantine(ctx(), SPAM_VERDICT)
    async with SmtpSink() as sink:

        async def reinject(mail_from: str, rcpts: list[str], raw: bytes) -> str:
            return await smtp_reinject(sink.host, sink.port, mail_from, rcpts, raw)

        queue_id = await q.release(
            qid, reinject, learn=lambda raw, spam: learnt.append((raw, spam))
        )
    assert queue_id == "SINK0001"
    (got,) = sink.handler.messages
    assert got.mail_from == "spammer@bad.example"
    assert got.rcpt_tos == ["bob@contoso.com", "carol@contoso.com"]
    assert got.data.startswith(f"{RELEASED_HEADER}: {qid}\r\n".encode())
    assert got.data.endswith(ctx().raw)
    assert q.get(qid).state == "released" and q.get(qid).released_queue_id == "SINK0001"
    assert q.list() == [] and len(q.list(state=None)) == 1
    assert [e[1] for e in events] == ["quarantined", "released"]
    assert "SINK0001" in events[1][2]
    assert learnt == [(ctx().raw, False)]  # released = a false positive: learnt as ham
    with pytest.raises(QuarantineError, match="released, not held"):
        await q.release(qid, reinject)


async def test_malware_is_released_only_on_purpose(tmp_path: Path) -> None:
    q = Quarantine(tmp_path)
    qid = await q.quarantine(ctx(), MALWARE_VERDICT)
    sent: list[list[str]] = []

    async def reinject(mail_from: str, rcpts: list[str], raw: bytes) -> str:
        sent.append(rcpts)
        return "Q9"

    with pytest.raises(QuarantineError, match="malware"):
        await q.release(qid, reinject)
    assert sent == []
    assert await q.release(qid, reinject, allow_malware=True) == "Q9"


async def test_failed_reinjection_keeps_the_message_held(tmp_path: Path) -> None:
    q = Quarantine(tmp_path)
    qid = await q.quarantine(ctx(), SPAM_VERDICT)

    async def broken(mail_from: str, rcpts: list[str], raw: bytes) -> str:
        raise ConnectionRefusedError("no listener")

    with pytest.raises(ConnectionRefusedError):
        await q.release(qid, broken)
    assert q.get(qid).state == "held" and q.path_of(qid).exists()


def test_an_encoded_subject_is_stored_decoded(tmp_path: Path) -> None:
    q = Quarantine(tmp_path)
    qid = q.store(ctx("Facture \u00e9t\u00e9 \u2014 \u8acb\u6c42\u66f8"), SPAM_VERDICT)
    assert b"=?utf-8?" in ctx("Facture \u00e9t\u00e9").raw  # as sent: RFC 2047 words
    assert q.get(qid).subject == "Facture \u00e9t\u00e9 \u2014 \u8acb\u6c42\u66f8"


def test_an_unusable_quarantine_folder_is_one_clear_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(MxflowError, match="cannot open the quarantine"):
        Quarantine(not_a_folder)


def test_delete_and_unknown_ids(tmp_path: Path) -> None:
    q = Quarantine(tmp_path)
    qid = q.store(ctx(), SPAM_VERDICT)
    q.delete(qid)
    assert q.list(state=None) == [] and not q.path_of(qid).exists()
    with pytest.raises(QuarantineError):
        q.show(qid)
    with pytest.raises(QuarantineError):
        q.path_of("../../etc/passwd")


async def test_pipeline_verdict_goes_to_the_quarantine_sink(tmp_path: Path) -> None:
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    pipeline = FilterPipeline()
    context = ctx()
    context.raw = message(gtube)
    verdict = await pipeline.evaluate(context, Phase.DATA)
    assert verdict.action is Action.REJECT  # GTUBE scores past the reject threshold
    verdict.action = Action.QUARANTINE
    qid = await Quarantine(tmp_path).quarantine(context, verdict)
    assert Quarantine(tmp_path).get(qid).symbols[0][0] == "GTUBE"


async def test_a_released_message_is_not_filtered_again_and_the_stamp_cannot_be_forged(
    tmp_path: Path,
) -> None:
    gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
    q = Quarantine(tmp_path)
    pipeline = FilterPipeline(quarantine=q)
    held = ctx()
    held.raw = message(gtube)
    qid = await q.quarantine(held, SPAM_VERDICT)
    reinjected: list[bytes] = []

    async def reinject(mail_from: str, rcpts: list[str], raw: bytes) -> str:
        # the receiving node prepends its Received header, then filters
        reinjected.append(b"Received: from gw by gw; Tue, 24 Nov 2026 10:00:00 +0000\r\n" + raw)
        verdict = await pipeline.evaluate(
            MessageContext("127.0.0.1", raw=reinjected[-1], rcpt_tos=rcpts), Phase.DATA
        )
        assert (verdict.scl, verdict.action) == (-1, Action.DELIVER)
        assert [s.name for s in verdict.symbols] == ["QUARANTINE_RELEASED"]
        return "Q1"

    assert await q.release(qid, reinject) == "Q1"
    forged = f"{RELEASED_HEADER}: {qid}\r\n".encode() + message(gtube + " changed")
    verdict = await pipeline.evaluate(MessageContext("127.66.0.9", raw=forged), Phase.DATA)
    assert verdict.action is Action.REJECT
    assert "FORGED_RELEASE" in {s.name for s in verdict.symbols}
    unknown = f"{RELEASED_HEADER}: 0123abcd\r\n".encode() + message()
    verdict = await FilterPipeline().evaluate(MessageContext("127.66.0.9", raw=unknown), Phase.DATA)
    assert "FORGED_RELEASE" in {s.name for s in verdict.symbols}
