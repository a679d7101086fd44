"""Where one connection's time goes: the latency of each SMTP step, session after session.

smtp-source at one session opens a connection per message, so a lone sender's rate is the
sum of these round trips (connect and banner, EHLO, MAIL, RCPT, DATA, the message and its
250, QUIT) plus the client's own work. Timing each step against two targets in turn, with
the same message, shows which step a gap lives in. A blocking client, one step at a time,
so nothing of the client's own scheduling lands in a step.
"""

from __future__ import annotations

import socket
import statistics
import time

STEPS = ("connect+banner", "EHLO", "MAIL", "RCPT", "DATA", "message->250", "QUIT")


def _reply(sock: socket.socket, buf: bytearray) -> bytes:
    """Read one (possibly multi-line) reply; return its last line."""
    while True:
        end = buf.find(b"\r\n")
        while end >= 0:
            line = bytes(buf[:end])
            del buf[: end + 2]
            if len(line) < 4 or line[3:4] != b"-":
                return line
            end = buf.find(b"\r\n")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-reply")
        buf += chunk


def wire(message: bytes) -> bytes:
    """A message file as DATA sends it: CRLF line ends, leading dots doubled."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)


def one_session(addr: tuple[str, int], message: bytes, rcpt: str) -> list[float]:
    """Seconds per step of one session that sends `message` (CRLF, dot-stuffed)."""
    times: list[float] = []
    buf = bytearray()
    t = time.perf_counter()
    sock = socket.create_connection(addr)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        commands = [
            None,
            b"EHLO bench.example.org\r\n",
            b"MAIL FROM:<sender@example.org>\r\n",
            f"RCPT TO:<{rcpt}>\r\n".encode(),
            b"DATA\r\n",
            message + b".\r\n",
            b"QUIT\r\n",
        ]
        for command in commands:
            if command is not None:
                sock.sendall(command)
            line = _reply(sock, buf)
            if line[:1] not in (b"2", b"3"):
                raise ConnectionError(f"refused: {line[:200]!r}")
            now = time.perf_counter()
            times.append(now - t)
            t = now
    finally:
        sock.close()
    return times


def compare(
    targets: dict[str, tuple[str, int]], message: bytes, rcpt: str, sessions: int
) -> dict[str, list[list[float]]]:
    """`sessions` sessions to each target, alternating one by one; per target, the times."""
    out: dict[str, list[list[float]]] = {name: [] for name in targets}
    for _ in range(sessions):
        for name, addr in targets.items():
            out[name].append(one_session(addr, message, rcpt))
    return out


def table(results: dict[str, list[list[float]]]) -> str:
    """Median and p90 µs per step, per target, as a markdown table."""
    names = list(results)
    head = "| step | " + " | ".join(f"{n} p50 / p90 µs" for n in names) + " |"
    rows = [head, "|---|" + "---:|" * len(names)]
    for i, step in enumerate((*STEPS, "whole session")):
        cells = []
        for n in names:
            if step == "whole session":
                values = [sum(s) for s in results[n]]
            else:
                values = [s[i] for s in results[n]]
            values.sort()
            p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
            cells.append(f"{1e6 * statistics.median(values):.0f} / {1e6 * p90:.0f}")
        rows.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
