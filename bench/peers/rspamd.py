"""A private rspamd instance (Debian's rspamd 3.4) with its own Redis for Bayes.

Set-up (as PEERS.md describes): Debian's /etc/rspamd/rspamd.conf with LOCAL_CONFDIR, DBDIR,
RUNDIR and LOGDIR pointing into a folder of ours; DNS to a stub that answers NXDOMAIN at
once (bench/lib/nxdns.py); fuzzy_check off (it contacts outside servers); Bayes in a private
redis-server (rspamd 3.4's only maintained Bayes backend) that starts empty; the scanner
(normal worker) and controller on a loopback address of ours; optionally the proxy worker
as a milter on a UNIX socket. Everything else is rspamd's default (one scanner process).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lib import procs

MISSING = {
    "rspamd": "apt-get install rspamd",
    "redis-server": "apt-get install redis-server",
    "redis-cli": "apt-get install redis-tools",
}


def start_nxdns(listen: str, log: Path) -> subprocess.Popen[bytes]:
    """Start the NXDOMAIN stub (bench/lib/nxdns.py) on listen ("IP:PORT") and wait for it."""
    proc = procs.start(
        [sys.executable, str(Path(__file__).parents[1] / "lib/nxdns.py"), "--listen", listen], log
    )
    time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError(f"nxdns stub on {listen} exited: see {log}")
    return proc


@dataclass
class RspamdConfig:
    root: Path
    host: str = "127.0.99.5"
    normal_port: int = 11333
    controller_port: int = 11334
    redis_port: int = 6390
    dns: str = "127.0.99.53:53"
    milter_socket: Path | None = None
    start_dns: bool = True  # start bench/lib/nxdns.py on `dns` (False: the caller runs one)
    local_d: dict[str, str] = field(default_factory=dict)  # more local.d files: name -> text


class Rspamd:
    """Start/stop a private rspamd (+ its Redis and DNS stub); scan and learn over HTTP."""

    def __init__(self, cfg: RspamdConfig) -> None:
        self.cfg = cfg
        self.tools = procs.require(MISSING)
        self.procs: list[subprocess.Popen[bytes]] = []

    # --- configuration -------------------------------------------------------------
    def _write_config(self) -> None:
        c = self.cfg
        root = procs.fresh_dir(c.root)
        for sub in ("local/local.d", "local/override.d", "db", "run", "log", "redis"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        ld, od = root / "local/local.d", root / "local/override.d"
        (ld / "options.inc").write_text(
            f'dns {{ nameserver = ["{c.dns}"]; timeout = 1s; retransmits = 2; }}\n'
        )
        (ld / "fuzzy_check.conf").write_text("enabled = false;\n")
        for name, text in c.local_d.items():
            (ld / name).write_text(text)
        (ld / "classifier-bayes.conf").write_text(
            f'backend = "redis";\nservers = "{c.host}:{c.redis_port}";\nautolearn = false;\n'
        )
        (od / "worker-normal.inc").write_text(f'bind_socket = "{c.host}:{c.normal_port}";\n')
        (od / "worker-controller.inc").write_text(
            f'bind_socket = "{c.host}:{c.controller_port}";\n'
            'secure_ip = "127.0.0.0/8";\npassword = "bench";\nenable_password = "bench";\n'
        )
        if c.milter_socket is not None:
            (od / "worker-proxy.inc").write_text(
                f'bind_socket = "{c.milter_socket} mode=0666 owner=_rspamd";\n'
                "milter = yes;\ntimeout = 120s;\n"
                # Debian's default: the proxy hands each message to the scanner (normal worker).
                f'upstream "local" {{ default = yes; hosts = "{c.host}:{c.normal_port}"; }}\n'
                "count = 1;\n"
            )
        else:
            (od / "worker-proxy.inc").write_text("count = 0;\n")
        subprocess.run(["chown", "-R", "_rspamd:_rspamd", str(root)], check=True)

    # --- life cycle ----------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        c = self.cfg
        self._write_config()
        redis = procs.start(
            [
                self.tools["redis-server"],
                "--bind", c.host, "--port", str(c.redis_port),
                "--save", "", "--appendonly", "no",
                "--dir", str(c.root / "redis"), "--protected-mode", "no",
            ],
            c.root / "log/redis.log",
        )  # fmt: skip
        self.procs.append(redis)
        procs.wait_port(c.host, c.redis_port, 20, redis)
        if c.start_dns:
            self.procs.append(start_nxdns(c.dns, c.root / "log/nxdns.log"))
        rspamd = procs.start(
            [
                self.tools["rspamd"], "-f", "-u", "_rspamd", "-g", "_rspamd",
                "-c", "/etc/rspamd/rspamd.conf",
                f"--var=LOCAL_CONFDIR={c.root / 'local'}",
                f"--var=DBDIR={c.root / 'db'}",
                f"--var=RUNDIR={c.root / 'run'}",
                f"--var=LOGDIR={c.root / 'log'}",
            ],
            c.root / "log/rspamd.stderr",
        )  # fmt: skip
        self.procs.append(rspamd)
        procs.wait_port(c.host, c.normal_port, timeout, rspamd)
        procs.wait_port(c.host, c.controller_port, timeout, rspamd)
        if c.milter_socket is not None:
            procs.wait_path(c.milter_socket, timeout)
        # The first scan waits for the rule maps and regexp cache: warm up once.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.scan(
                    b"From: a@example.org\r\nTo: b@contoso.com\r\nSubject: hi\r\n\r\nhello\r\n"
                )
                return
            except (OSError, RuntimeError):
                time.sleep(0.5)
        raise TimeoutError("rspamd did not answer a scan")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            procs.stop(proc)
        self.procs.clear()

    def flush_bayes(self) -> None:
        """Forget everything learnt (a new fold starts from an empty Bayes)."""
        procs.run(
            [
                self.tools["redis-cli"],
                "-h",
                self.cfg.host,
                "-p",
                str(self.cfg.redis_port),
                "FLUSHALL",
            ]
        )

    # --- HTTP API ------------------------------------------------------------------
    def _post(
        self, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, object]]:
        conn = http.client.HTTPConnection(self.cfg.host, port, timeout=60.0)
        try:
            conn.request("POST", path, body=body, headers={"Password": "bench", **(headers or {})})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = {"raw": data.decode("latin-1")}
        return resp.status, parsed if isinstance(parsed, dict) else {"raw": parsed}

    def scan(self, raw: bytes) -> tuple[float, str]:
        """(score, action) of one message."""
        status, data = self._post(self.cfg.normal_port, "/checkv2", raw)
        if status != 200 or "score" not in data:
            raise RuntimeError(f"rspamd scan failed: {status} {data}")
        score = data["score"]
        assert isinstance(score, (int, float))
        return float(score), str(data.get("action", ""))

    def learn(self, raw: bytes, spam: bool) -> bool:
        """Learn one message; False when rspamd declined it (e.g. too few tokens).

        `Learn-Type: bulk` (rspamd's own header for corpus training) learns every message:
        without it rspamd skips those its Bayes already puts in the class with p >= 0.95,
        which leaves most of a training set unlearnt (sa-learn learns every message).
        """
        path = "/learnspam" if spam else "/learnham"
        status, _ = self._post(self.cfg.controller_port, path, raw, {"Learn-Type": "bulk"})
        return status == 200
