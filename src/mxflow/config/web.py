"""`[store]`, `[metrics]`, `[web]`: where the trace is kept, and how people look at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mxflow.config.base import _endpoint, _ip, _path, _Table


@dataclass(frozen=True)
class WebConfig:
    """`[web]`: the admin UI (`mxflow web`) of this node."""

    listen: tuple[str, int] = ("127.0.0.1", 8025)
    users_db: Path | None = None  # accounts and sessions; default DATA_DIR/web.sqlite
    session_lifetime: float = 8 * 3600.0
    idle_timeout: float = 3600.0
    secure_cookies: bool = True  # False only for plain-HTTP tests on loopback
    public_url: str = ""  # how recipients reach the UI (digest links); default http://LISTEN
    digest_interval: float = 0.0  # seconds between quarantine digests; 0: none


def _listen(t: _Table, name: str, default: tuple[str, int] | None) -> tuple[str, int] | None:
    text = t.opt_text(name)
    if text is None:
        return default
    where = _endpoint(t, t.key(name), text, 0)
    _ip(t, name, where.host)
    if where.port == 0:
        raise t.error(name, text, 'IP:PORT, e.g. "127.0.0.1:9125"')
    return (where.host, where.port)


def _store_section(top: _Table, data_dir: Path, trace: Path) -> tuple[str | None, Path]:
    """`[store] url`: where the state nodes share goes.

    `postgresql://USER@HOST:PORT/DB` puts the shared state of several nodes on one
    PostgreSQL database (docs/cluster.md); a SQLite path (`sqlite:///abs/path`,
    `sqlite:rel/path` or a bare path, relative to the data dir like every path here)
    shares only the trace, between nodes on one machine. Other schemes are refused by
    name rather than taken for a file called `mysql:`."""
    t = top.table("store")
    if t is None:
        return None, trace
    url = t.text("url", required=True)
    t.done()
    scheme, sep, rest = url.partition(":")
    if scheme in {"postgresql", "postgres"}:
        if not rest.startswith("//") or not rest[2:].split("/", 1)[0]:
            raise t.error("url", url, "postgresql://USER@HOST:PORT/DATABASE")
        return url, trace
    if sep and len(scheme) > 1 and scheme != "sqlite":
        raise t.error("url", url, "postgresql://USER@HOST:PORT/DATABASE or a SQLite path")
    path_text = rest.removeprefix("//") if sep and scheme == "sqlite" else url
    path = _path(data_dir, path_text)
    if path is None:
        raise t.error("url", url, "a SQLite path or sqlite:///PATH")
    return url, path


def _metrics_section(top: _Table) -> tuple[str, int] | None:
    """`[metrics] listen = "IP:PORT"`: serve /metrics and /healthz there (off if unset)."""
    t = top.table("metrics")
    if t is None:
        return None
    listen = _listen(t, "listen", None)
    t.done()
    return listen


def _web_section(top: _Table, data_dir: Path) -> WebConfig:
    """`[web]`: the admin UI's address, account store and session lifetimes."""
    t = top.table("web") or _Table(top.file, "web", {})
    listen = _listen(t, "listen", WebConfig.listen)
    assert listen is not None
    web = WebConfig(
        listen=listen,
        users_db=_path(data_dir, t.text("users_db", "web.sqlite")),
        session_lifetime=t.duration("session_lifetime", WebConfig.session_lifetime),
        idle_timeout=t.duration("idle_timeout", WebConfig.idle_timeout),
        secure_cookies=t.flag("secure_cookies", True),
        public_url=t.text("public_url", f"http://{listen[0]}:{listen[1]}").rstrip("/"),
        digest_interval=t.duration("digest_interval", 0.0),
    )
    t.done()
    return web
