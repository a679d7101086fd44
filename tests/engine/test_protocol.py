"""The SMTP command state machine, command by command, without a socket."""

from __future__ import annotations

import asyncio
import base64

from mxflow.mail import TlsInfo
from mxflow.smtp.protocol import Features, Next, Session, SmtpProtocol, Step
from mxflow.smtp.sasl import AuthOutcome, Credentials

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


# ---------------------------------------------------------------------- AUTH (RFC 4954)

SUBMISSION = Features(
    hostname="mx.test",
    max_message_size=1000,
    max_recipients=2,
    max_errors=50,
    starttls=True,
    submission=True,
    auth=True,
)
TLS = TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256)


class Logins:
    """An authenticator that knows one password and can be told to throttle."""

    def __init__(self) -> None:
        self.blocked = False

    def throttled(self, session: Session) -> bool:
        return self.blocked

    async def verify(self, session: Session, credentials: Credentials) -> tuple[AuthOutcome, str]:
        ok = (credentials.username, credentials.password) == ("bob@contoso.com", "s3cret")
        return (AuthOutcome.OK if ok else AuthOutcome.BAD), credentials.username


def submission(tls: bool = True) -> tuple[SmtpProtocol, Logins]:
    logins = Logins()
    p = SmtpProtocol(SUBMISSION, AcceptAll(), Session("127.0.0.9", 5000), logins)
    if tls:
        p.tls_started(TLS)
    p.handle(b"EHLO client.test\r\n")
    return p, logins


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


NUL = b"\0"
PLAIN_OK = b64(b"\0bob@contoso.com\0s3cret")


def finish_auth(p: SmtpProtocol, step: Step) -> Step:
    """What the server does with Next.AUTH: await the authenticator, hand back the outcome."""
    assert step.next is Next.AUTH and step.credentials is not None
    assert p.authenticator is not None
    outcome, account = asyncio.run(p.authenticator.verify(p.session, step.credentials))
    return p.auth_finished(outcome, account)


def test_auth_is_neither_offered_nor_taken_before_tls() -> None:
    p, _ = submission(tls=False)
    ehlo = p.handle(b"EHLO client.test\r\n").replies
    assert not any("AUTH" in line for line in ehlo) and ehlo[-1] == "250 STARTTLS"
    plain = b64(b"\0bob@contoso.com\0s3cret")
    assert codes(p, f"AUTH PLAIN {plain}") == ["530 5.7.0"]
    assert codes(p, "MAIL FROM:<bob@contoso.com>") == ["530 5.7.0"]
    assert p.session.auth_user is None


def test_auth_plain_with_an_initial_response() -> None:
    p, _ = submission()
    assert "250 AUTH PLAIN LOGIN" in p.handle(b"EHLO client.test\r\n").replies
    assert codes(p, "MAIL FROM:<bob@contoso.com>") == ["530 5.7.0"]  # MAIL needs AUTH
    step = p.handle(f"AUTH PLAIN {PLAIN_OK}\r\n".encode())
    assert finish_auth(p, step).replies == ["235 2.7.0 Authentication successful"]
    assert p.session.auth_user == "bob@contoso.com"
    assert codes(p, "AUTH PLAIN") == ["503 5.5.1"]  # once per session
    assert codes(p, "MAIL FROM:<bob@contoso.com>") == ["250 2.1.0"]


def test_auth_plain_and_login_with_challenges() -> None:
    p, _ = submission()
    step = p.handle(b"AUTH PLAIN\r\n")
    assert (step.replies, step.next) == (["334 "], Next.SASL)
    both = b64(b"bob@contoso.com" + NUL + b"bob@contoso.com" + NUL + b"s3cret")
    step = p.handle(f"{both}\r\n".encode())
    assert finish_auth(p, step).replies[0].startswith("235 2.7.0")
    p, _ = submission()
    step = p.handle(b"AUTH LOGIN\r\n")
    assert (step.replies, step.next) == (["334 VXNlcm5hbWU6"], Next.SASL)
    step = p.handle(f"{b64(b'bob@contoso.com')}\r\n".encode())
    assert (step.replies, step.next) == (["334 UGFzc3dvcmQ6"], Next.SASL)
    step = p.handle(f"{b64(b'wrong')}\r\n".encode())
    assert finish_auth(p, step).replies == ["535 5.7.8 Authentication credentials invalid"]
    assert p.session.auth_user is None
    # LOGIN with the user name as the initial response
    step = p.handle(f"AUTH LOGIN {b64(b'bob@contoso.com')}\r\n".encode())
    assert step.replies == ["334 UGFzc3dvcmQ6"]
    assert finish_auth(p, p.handle(f"{b64(b's3cret')}\r\n".encode())).replies[0][:3] == "235"


def test_garbage_in_the_exchange_is_501_and_ends_it() -> None:
    p, _ = submission()
    for response in (
        "not base64!",
        "A" * 5000,  # over the bound: never decoded
        b64(b"\0only-two-parts"),
        b64(b"\0bob@contoso.com\0pass\r\nRSET"),  # CR/LF inside a credential
        b64(b"\0\xff\xfe\0pw"),  # not UTF-8
        b64(b"alice@contoso.com\0bob@contoso.com\0s3cret"),  # acting as someone else
        b64(b"\0" + b"a" * 400 + b"\0pw"),  # user name over 320 octets
    ):
        assert p.handle(b"AUTH PLAIN\r\n").next is Next.SASL
        step = p.handle(response.encode() + b"\r\n")
        assert step.replies[0][:9] == "501 5.5.2", response[:40]
        assert step.next is Next.READ and p.session.auth_user is None
    assert p.handle(b"AUTH LOGIN\r\n").next is Next.SASL
    assert codes(p, "*") == ["501 5.0.0"]  # the client cancels
    assert codes(p, "NOOP") == ["250 2.0.0"]  # back to commands


def test_auth_refusals_and_throttling() -> None:
    p, logins = submission()
    assert codes(p, "AUTH CRAM-MD5") == ["504 5.5.4"]
    assert codes(p, "AUTH") == ["501 5.5.4"]
    logins.blocked = True
    assert codes(p, "AUTH PLAIN") == ["454 4.7.0"]  # at once, no exchange
    # a plain (non-submission) listener: no AUTH at all
    q, _ = proto()
    q.handle(b"EHLO client.test\r\n")
    assert codes(q, "AUTH PLAIN") == ["502 5.5.1"]


def test_non_ascii_digits_in_sizes_are_syntax_errors() -> None:
    """`SIZE=²` and `BDAT ²`: str.isdigit() says yes, int() raises (found by fuzzing)."""
    p, _ = proto()
    p.handle(b"EHLO client.test\r\n")
    assert codes(p, "MAIL FROM:<a@b.test> SIZE=\u00b2") == ["501 5.5.4"]
    p.handle(b"MAIL FROM:<a@b.test>\r\n")
    p.handle(b"RCPT TO:<c@d.test>\r\n")
    step = p.handle("BDAT \u00b2 LAST\r\n".encode())
    assert step.next is Next.CLOSE and step.replies[0].startswith("501 5.5.4")
