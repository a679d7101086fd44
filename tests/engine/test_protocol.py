"""The SMTP command state machine, command by command, without a socket."""

from __future__ import annotations

from mxflow.mail import TlsInfo
from mxflow.smtp.protocol import Features, Next, Session, SmtpProtocol

FEATURES = Features(
    hostname="mx.test", max_message_size=1000, max_recipients=2, max_errors=50, starttls=True
)


class AcceptAll:
    """A screen that takes every sender and recipient and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def mail(self, session: Session, address: str) -> str | None:
        self.asked.append(f"mail {address}")
        return None

    def rcpt(self, session: Session, address: str) -> tuple[str | None, str]:
        self.asked.append(f"rcpt {address}")
        if address.startswith("nobody@"):
            return "550 5.1.1 unknown", address
        return None, address


def proto() -> tuple[SmtpProtocol, AcceptAll]:
    screen = AcceptAll()
    return SmtpProtocol(FEATURES, screen, Session("127.0.0.9", 5000)), screen


def codes(p: SmtpProtocol, line: str | bytes) -> list[str]:
    raw = line if isinstance(line, bytes) else line.encode() + b"\r\n"
    return [r[:9] for r in p.handle(raw).replies]


def test_a_whole_transaction_reaches_data() -> None:
    p, screen = proto()
    assert p.greeting() == "220 mx.test ESMTP mxflow"
    ehlo = p.handle(b"EHLO client.test\r\n").replies
    assert ehlo[-1] == "250 STARTTLS" and "250-SIZE 1000" in ehlo
    assert codes(p, "MAIL FROM:<a@b.test> BODY=8BITMIME") == ["250 2.1.0"]
    assert codes(p, "RCPT TO:<c@d.test>") == ["250 2.1.5"]
    step = p.handle(b"DATA\r\n")
    assert step.next is Next.DATA and step.replies == []
    assert p.session.body_8bit and p.session.rcpt_tos == ["c@d.test"]
    assert screen.asked == ["mail a@b.test", "rcpt c@d.test"]
    assert p.finish("250 2.0.0 Ok: queued as X").replies == ["250 2.0.0 Ok: queued as X"]


def test_sequence_errors() -> None:
    p, _ = proto()
    assert codes(p, "MAIL FROM:<a@b.test>") == ["503 5.5.1"]  # no EHLO yet
    p.handle(b"HELO client.test\r\n")
    assert codes(p, "RCPT TO:<c@d.test>") == ["503 5.5.1"]
    assert codes(p, "DATA") == ["503 5.5.1"]
    p.handle(b"MAIL FROM:<>\r\n")
    assert codes(p, "MAIL FROM:<>") == ["503 5.5.1"]  # nested
    assert codes(p, "DATA") == ["554 5.5.1"]  # no recipients


def test_cr_lf_nul_inside_a_command_are_refused_before_the_screen_sees_them() -> None:
    p, screen = proto()
    p.handle(b"EHLO client.test\r\n")
    for line in (b"MAIL FROM:<a\rb@b.test>\r\n", b"MAIL FROM:<a\x00b@b.test>\r\n"):
        assert codes(p, line) == ["501 5.5.2"]
    p.handle(b"MAIL FROM:<a@b.test>\r\n")
    assert codes(p, b"RCPT TO:<x\rAuthentication-Results: evil@d.test>\r\n") == ["501 5.5.2"]
    assert screen.asked == ["mail a@b.test"]
    assert p.session.rcpt_tos == []


def test_address_limits_of_rfc_5321_and_6531() -> None:
    p, _ = proto()
    p.handle(b"EHLO client.test\r\n")
    assert codes(p, f"MAIL FROM:<{'a' * 65}@b.test>") == ["553 5.1.7"]
    assert codes(p, "MAIL FROM:<\xe9@b.test>") == ["553 5.6.7"]  # needs SMTPUTF8
    bad_utf8 = b"MAIL FROM:<\xff\xfe@b.test> SMTPUTF8\r\n"
    assert codes(p, bad_utf8) == ["553 5.1.7"]
    assert codes(p, "MAIL FROM:<\xe9@b.test> SMTPUTF8") == ["250 2.1.0"]
    assert codes(p, f"RCPT TO:<{'r' * 65}@d.test>") == ["553 5.1.3"]
    assert codes(p, f"RCPT TO:<r@{'d' * 251}.test>") == ["553 5.1.3"]
    assert codes(p, b"RCPT TO:<\xc3@d.test>\r\n") == ["553 5.1.3"]


def test_recipient_limit_and_refusals() -> None:
    p, _ = proto()
    p.handle(b"EHLO client.test\r\n")
    p.handle(b"MAIL FROM:<a@b.test>\r\n")
    assert codes(p, "RCPT TO:<nobody@d.test>") == ["550 5.1.1"]
    assert p.session.rejected == 1
    p.handle(b"RCPT TO:<r1@d.test>\r\n")
    p.handle(b"RCPT TO:<r2@d.test>\r\n")
    assert codes(p, "RCPT TO:<r3@d.test>") == ["452 4.5.3"]


def test_too_many_errors_close_the_session() -> None:
    features = Features(hostname="mx.test", max_message_size=1000, max_recipients=2, max_errors=5)
    p = SmtpProtocol(features, AcceptAll(), Session("127.0.0.9", 5000))
    for _ in range(4):
        assert p.handle(b"BOGUS\r\n").next is Next.READ
    step = p.handle(b"BOGUS\r\n")
    assert step.next is Next.CLOSE and step.replies[-1].startswith("421 4.7.0")


def test_starttls_resets_the_session() -> None:
    p, _ = proto()
    p.handle(b"EHLO client.test\r\n")
    p.handle(b"MAIL FROM:<a@b.test>\r\n")
    step = p.handle(b"STARTTLS\r\n")
    assert step.next is Next.STARTTLS and step.replies == ["220 2.0.0 Ready to start TLS"]
    p.tls_started(TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384"))
    assert p.session.helo == "" and p.session.mail_from is None
    assert "250 STARTTLS" not in p.handle(b"EHLO client.test\r\n").replies
    assert codes(p, "STARTTLS") == ["503 5.5.1"]


def test_shutting_down_closes_between_transactions() -> None:
    p, _ = proto()
    p.accepting = False
    step = p.handle(b"NOOP\r\n")
    assert step.next is Next.CLOSE and step.replies[-1].startswith("421 4.3.2")


def test_one_enhanced_status_code_per_reply() -> None:
    from mxflow.smtp.replies import reply_line

    dmarc = "5.7.1 DMARC policy of fabrikam.com (reject): failed authentication"
    assert reply_line(550, "5.7.1", dmarc) == (
        "550 5.7.1 DMARC policy of fabrikam.com (reject): failed authentication"
    )
    assert reply_line(550, "5.7.1", "5.7.26 Unauthenticated") == "550 5.7.26 Unauthenticated"
    assert reply_line(451, "4.7.1", "5.7.1 wrong class") == "451 4.7.1 wrong class"
    assert reply_line(550, "5.7.1", "plain reason") == "550 5.7.1 plain reason"


def test_bdat_steps() -> None:
    p, _ = proto()
    assert any(r.endswith("CHUNKING") for r in p.handle(b"EHLO client.test\r\n").replies)
    step = p.handle(b"BDAT 10\r\n")
    assert step.next is Next.CHUNK and step.refusal == "503 5.5.1 Need MAIL command"
    p.handle(b"MAIL FROM:<a@b.test>\r\n")
    p.handle(b"RCPT TO:<c@d.test>\r\n")
    step = p.handle(b"BDAT 10 last\r\n")
    assert (step.next, step.chunk_size, step.last, step.refusal) == (Next.CHUNK, 10, True, None)
    assert p.handle(b"BDAT ten\r\n").next is Next.CLOSE
