"""A private Postfix relay (Debian's postfix 3.7), set up as PEERS.md describes.

Its own config folder (which must be listed in /etc/postfix/main.cf's
alternate_config_directories, or `postfix -c` refuses as root), queue, data folder and log
under BENCH_ROOT; smtpd on one loopback address:port; relays contoso.com to the sink through
transport_maps; no DNS; no local delivery. Postfix's defaults otherwise (100 processes,
destination concurrency 20, in_flow_delay 1s, fsync of every queue file before the 250).
Every service runs unchrooted so the private folders need no chroot set-up.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lib import procs

MISSING = {
    "postfix": "apt-get install postfix (pre-seed: see bench/README.md)",
    "postconf": "apt-get install postfix",
    "smtp-source": "apt-get install postfix (ships /usr/sbin/smtp-source)",
    "smtp-sink": "apt-get install postfix (ships /usr/sbin/smtp-sink)",
}

MAIN_CF = """\
# mxflow bench: a private Postfix relay equal to a gateway (bench/peers/postfix.py)
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = {name}.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_transport = error:local delivery disabled
alias_maps =
alias_database =
relay_domains = contoso.com
transport_maps = inline:{{ contoso.com=smtp:[{sink_host}]:{sink_port} }}
smtp_dns_support_level = disabled
maillog_file = {root}/maillog
biff = no
{extra}
"""


def master_cf(listen: str) -> str:
    """Debian's master.cf with chroot off everywhere and smtpd on `listen` only."""
    out: list[str] = []
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if line and not line[0].isspace() and not line.startswith("#") and len(fields) >= 8:
            if fields[0] == "smtp" and fields[1] == "inet":
                fields[0] = listen
            fields[4] = "n"
            out.append(" ".join(fields))
        else:
            out.append(line)
    return "\n".join(out) + "\n"


@dataclass
class PostfixConfig:
    name: str  # "postfix-relay" or "postfix-milter": the config folder under BENCH_ROOT
    host: str
    port: int
    sink_host: str
    sink_port: int
    extra: str = ""  # more main.cf lines (e.g. smtpd_milters)


class Postfix:
    def __init__(self, cfg: PostfixConfig) -> None:
        self.cfg = cfg
        self.tools = procs.require(MISSING)
        self.root = procs.BENCH_ROOT / cfg.name

    def check_alternate(self) -> None:
        out = procs.run([self.tools["postconf"], "-h", "alternate_config_directories"], check=False)
        listed = out.stdout.split()
        listed = [re.sub(r"[,\s]", "", d) for d in listed]
        if str(self.root) not in listed:
            raise procs.Missing(
                f"/etc/postfix/main.cf must list {self.root} in alternate_config_directories "
                "(postfix -c refuses other folders as root). Run once:\n"
                f"  postconf -e 'alternate_config_directories = {procs.BENCH_ROOT}/postfix-relay "
                f"{procs.BENCH_ROOT}/postfix-milter'\n"
                "(if /etc/postfix/main.cf does not exist, create it first: "
                "touch /etc/postfix/main.cf)"
            )

    def master_pid(self) -> int | None:
        """The pid of a master still running from this folder (this run or an earlier one)."""
        try:
            pid = int((self.root / "queue/pid/master.pid").read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"postfix" in cmdline and b"master" in cmdline else None

    def start(self) -> None:
        self.check_alternate()
        self.stop()  # a master left over from an interrupted run would share the port
        c = self.cfg
        if not procs.port_free(c.host, c.port):
            raise RuntimeError(f"{c.host}:{c.port} is already in use")
        procs.fresh_dir(self.root)
        (self.root / "main.cf").write_text(
            MAIN_CF.format(
                root=self.root, name=c.name, host=c.host,
                sink_host=c.sink_host, sink_port=c.sink_port, extra=c.extra,
            )
        )  # fmt: skip
        (self.root / "master.cf").write_text(master_cf(f"{c.host}:{c.port}"))
        (self.root / "queue").mkdir()
        (self.root / "data").mkdir()
        subprocess.run(["chown", "postfix", str(self.root / "data")], check=True)
        for action in ("check", "start"):
            argv = [self.tools["postfix"], "-c", str(self.root), action]
            if subprocess.run(argv, capture_output=True, timeout=60, check=False).returncode:
                # Postfix reports to syslog, or to stderr only on a terminal: replay on one.
                why = procs.run(["script", "-qc", " ".join(argv), "/dev/null"], check=False)
                raise RuntimeError(f"postfix {action} failed: {why.stdout.strip()}")
        procs.wait_port(c.host, c.port, 30)

    def queue_empty(self) -> bool:
        for sub in ("incoming", "active", "deferred", "maildrop"):
            folder = self.root / "queue" / sub
            if folder.is_dir() and any(p.is_file() for p in folder.rglob("*")):
                return False
        return True

    def deferred(self) -> int:
        folder = self.root / "queue" / "deferred"
        return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0

    def stop(self) -> None:
        """`postfix stop`, then wait for the master to be gone (SIGKILL after 15 s)."""
        pid = self.master_pid()
        if (self.root / "main.cf").exists():
            subprocess.run(
                [self.tools["postfix"], "-c", str(self.root), "stop"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        if pid is None:
            return
        deadline = time.monotonic() + 15
        while self.master_pid() == pid and time.monotonic() < deadline:
            if time.monotonic() > deadline - 10:  # `postfix stop` did not do it in 5 s
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            time.sleep(0.2)
        if self.master_pid() == pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
