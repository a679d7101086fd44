"""A DNS stub that answers every query NXDOMAIN at once, so offline peers never wait.

rspamd runs ~13-16 DNS lookups per message (RBLs, SURBL, DKIM, SPF...); offline, a resolver
that answers nothing makes each of them wait for a timeout. This stub stands in for "the
Internet has no such name". Run it as a process of its own:

    .venv/bin/python bench/lib/nxdns.py --listen 127.0.99.53:53
"""

from __future__ import annotations

import argparse
import socket
import threading


def answer(wire: bytes) -> bytes | None:
    """The NXDOMAIN response to one query in wire format (None if it is not a query).

    Built by hand, without parsing into objects: header with the query's ID, QR and RA set,
    RD copied, RCODE 3, then the query's question section; no answer, authority or EDNS.
    Fast enough that a burst of rspamd's ~60 lookups a message is answered, not dropped.
    """
    if len(wire) < 12 or wire[2] & 0x80:  # too short, or a response
        return None
    pos = 12
    while pos < len(wire):
        length = wire[pos]
        if length == 0:
            break
        if length & 0xC0:  # no compression pointers in a question we answer
            return None
        pos += 1 + length
    pos += 1 + 4  # the root label, QTYPE, QCLASS
    if pos > len(wire):
        return None
    flags = bytes([0x80 | (wire[2] & 0x79), 0x80 | 3])  # QR, opcode and RD copied; RA; NXDOMAIN
    return wire[:2] + flags + b"\x00\x01\x00\x00\x00\x00\x00\x00" + wire[12:pos]


def _serve_udp(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(4096)
        reply = answer(data)
        if reply is not None:
            sock.sendto(reply, peer)


def _serve_tcp_client(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(10)
        try:
            while (head := conn.recv(2, socket.MSG_WAITALL)) and len(head) == 2:
                reply = answer(conn.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL))
                if reply is None:
                    return
                conn.sendall(len(reply).to_bytes(2, "big") + reply)
        except OSError:
            return


def _serve_tcp(sock: socket.socket) -> None:
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_serve_tcp_client, args=(conn,), daemon=True).start()


def serve(host: str, port: int) -> None:
    """Serve UDP and TCP on host:port until killed."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    udp.bind((host, port))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host, port))
    tcp.listen(64)
    threading.Thread(target=_serve_tcp, args=(tcp,), daemon=True).start()
    _serve_udp(udp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.99.53:53", help="address:port (loopback only)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    if not host.startswith("127."):
        parser.error("--listen must be a 127.0.0.0/8 address")
    socket.inet_aton(host)
    serve(host, int(port))


if __name__ == "__main__":
    main()
