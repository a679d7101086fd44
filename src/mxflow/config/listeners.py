"""`[[listeners]]`: the addresses and ports a node speaks SMTP on, and their TLS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mxflow.config.base import TlsMode, _ip, _path, _Table


@dataclass(frozen=True)
class Listener:
    """One address:port the node accepts SMTP on, and its TLS mode."""

    address: str
    port: int
    tls: TlsMode = "starttls"
    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None  # ask clients for a certificate signed by this CA
    generate_cert: bool = False  # create a self-signed cert/key if missing
    submission: bool = False  # a submission port (587): AUTH after TLS, MAIL only after AUTH


def _listener(t: _Table, data_dir: Path) -> Listener:
    address = t.text("address", required=True)
    if address:
        address = _ip(t, "address", address)
    port = t.integer("port", 25, minimum=0, maximum=65535)
    tls = t.choice("tls", ("none", "starttls", "implicit"), "starttls")
    cert = _path(data_dir, t.opt_text("cert"))
    key = _path(data_dir, t.opt_text("key"))
    client_ca = _path(data_dir, t.opt_text("client_ca"))
    generate = t.flag("generate_cert", False)
    submission = t.flag("submission", False)
    t.done()
    if submission and tls == "none":
        raise t.error(
            "tls", tls, "starttls or implicit on a submission listener (no AUTH in clear)"
        )
    if tls != "none" and (cert is None or key is None):
        raise t.error("cert", None, f"cert and key files for tls = {tls!r} (or tls = 'none')")
    if tls != "none" and not generate:
        for name, p in (("cert", cert), ("key", key)):
            if p is not None and not p.exists():
                t.record(name, str(p), "an existing file (or set generate_cert = true)")
    return Listener(address, port, tls, cert, key, client_ca, generate, submission)  # type: ignore[arg-type]
