"""The lab's mail: a corpus (DIR/ham/*, DIR/spam/*) plus the synthetic classes.

A corpus message keeps its body and headers; the sending lab node sets only what a real
sender's MTA would: the envelope, the From domain (its own), a `Received` line of its own,
its own DKIM signature (old signatures of the corpus are removed: they could not verify)
and `X-Lab-Id`, the tag the report finds each message by. LF line ends become CRLF.

The shipped sample (mxflow/data/lab/corpus) is 120 ham and 60 spam messages of the
SpamAssassin public corpus (PDDL 1.0 / CC0 1.0; see THIRD_PARTY_NOTICES.d/filter.txt and
data/corpus/ in the repository), chosen by the order of their MD5 (`make`-free, fixed).
"""

from __future__ import annotations

import base64
import email.utils
import re
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mxflow.auth.dkim import sign_sync
from mxflow.errors import MxflowError
from mxflow.lab.world import Peer

DROPPED_HEADERS = (b"dkim-signature", b"domainkey-signature", b"x-lab-id")


@dataclass
class LabMessage:
    """One message the lab sends: who sends it, to whom, the bytes, and its truth."""

    lab_id: str
    kind: str  # the sender class
    peer: Peer | None  # None: a contoso user (outbound)
    mail_from: str
    rcpt: str
    raw: bytes


def default_corpus() -> Path:
    return Path(str(resources.files("mxflow") / "data" / "lab" / "corpus"))


def corpus_files(directory: Path) -> dict[str, list[Path]]:
    """DIR/ham/* and DIR/spam/*, sorted: each file is one message."""
    if not (directory / "ham").is_dir() and not (directory / "spam").is_dir():
        raise MxflowError(f"{directory}: not a corpus (expected {directory}/ham and/or /spam)")
    found = {}
    for kind in ("ham", "spam"):
        sub = directory / kind
        found[kind] = sorted(p for p in sub.iterdir() if p.is_file()) if sub.is_dir() else []
    return found


def crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


def split_message(raw: bytes) -> tuple[list[bytes], bytes]:
    """(header fields with their folded lines, body) of a CRLF message."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, body = raw, b""
    if head.startswith((b"From ", b">From ")):  # an mbox separator line
        head = head.partition(b"\r\n")[2]
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        elif line:
            fields.append(line)
    return fields, body


def _new_from(field: bytes, domain: str) -> tuple[bytes, str]:
    """The From field with the address moved into `domain`, and that address."""
    value = field.partition(b":")[2].decode("utf-8", "replace").replace("\r\n", "")
    name, addr = email.utils.parseaddr(value)
    local = re.sub(r"[^A-Za-z0-9._-]", "", addr.partition("@")[0])[:40].strip(".") or "user"
    address = f"{local}@{domain}"
    name = re.sub(r"[\"\\\r\n]", "", name)[:60]
    text = f'"{name}" <{address}>' if name else address
    return f"From: {text}".encode(), address


def prepare(
    raw: bytes, peer: Peer, lab_id: str, *, from_local: str | None = None
) -> tuple[bytes, str]:
    """The message as `peer` sends it, and the author address (also the envelope sender)."""
    fields, body = split_message(crlf(raw))
    fields = [f for f in fields if f.split(b":", 1)[0].strip().lower() not in DROPPED_HEADERS]
    author = ""
    for i, f in enumerate(fields):
        if f.split(b":", 1)[0].strip().lower() == b"from":
            fields[i], author = _new_from(f, peer.domain)
            break
    if not author:
        author = f"{from_local or 'user'}@{peer.domain}"
        fields.insert(0, f"From: {author}".encode())
    if from_local:
        author = f"{from_local}@{peer.domain}"
        fields = [
            f"From: {author}".encode() if f.lower().startswith(b"from:") else f for f in fields
        ]
    stamp = email.utils.formatdate(time.time())
    received = (
        f"Received: by {peer.helo} (mxflow lab sender) id {abs(hash(lab_id)) % 10**8}; {stamp}"
    )
    lines = [received.encode(), f"X-Lab-Id: {lab_id}".encode(), *fields]
    message = b"\r\n".join(lines) + b"\r\n\r\n" + body
    return sign(message, peer), author


def sign(message: bytes, peer: Peer) -> bytes:
    """`message` with the peer's DKIM signature on top (unchanged if it does not sign)."""
    if not peer.signs_as or peer.key is None:
        return message
    name, value = sign_sync(message, peer.signs_as, "lab", peer.key)
    return f"{name}: {value}\r\n".encode() + message


def synthetic(subject: str, body: str, *, to: str) -> bytes:
    """A plain message of the lab's own making (From is set by `prepare`)."""
    return (
        f"From: someone@example.invalid\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.formatdate(time.time())}\r\n"
        f"Message-ID: <{abs(hash(subject + body)) % 10**12}@lab.invalid>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n"
    ).encode()


def malware(to: str, n: int) -> bytes:
    """An invoice with an executable behind a double extension (no real payload)."""
    payload = base64.encodebytes(b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00" + bytes(64))
    boundary = f"lab-boundary-{n}"
    return (
        f"From: billing@example.invalid\r\nTo: {to}\r\nSubject: Invoice {4711 + n} overdue\r\n"
        f"Date: {email.utils.formatdate(time.time())}\r\nMessage-ID: <mal{n}@lab.invalid>\r\n"
        f'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nPlease find the invoice attached.\r\n"
        f"--{boundary}\r\nContent-Type: application/pdf\r\n"
        f'Content-Disposition: attachment; filename="invoice-{n}.pdf.exe"\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{payload.decode()}\r\n--{boundary}--\r\n"
    ).encode()
