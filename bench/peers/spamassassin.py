"""A private SpamAssassin (Debian's spamassassin 4.0): own site config, own Bayes DB, own spamd.

Set-up: a copy of /etc/spamassassin (the .pre files load the default plugins) plus a
local.cf of ours with Bayes on and stored in our folder, auto-learn off, network tests off
(spamd -L, skip_rbl_checks); training with `sa-learn --siteconfigpath`; scoring through
spamd (two children, on a loopback address of ours) with the plain spamd protocol.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lib import procs

MISSING = {
    "spamd": "apt-get install spamd (Debian 12: part of spamassassin)",
    "sa-learn": "apt-get install spamassassin",
}

LOCAL_CF = """\
# mxflow bench: Bayes on, trained only by sa-learn on the training folds; no network tests.
use_bayes 1
bayes_auto_learn 0
bayes_path {bayes}/bayes
bayes_file_mode 0777
bayes_auto_expire 0
skip_rbl_checks 1
use_razor2 0
use_pyzor 0
dns_available no
use_auto_whitelist 0
"""

_RESULT = re.compile(rb"Spam: (True|False) ; (-?[0-9.]+) / (-?[0-9.]+)")


@dataclass
class SpamAssassinConfig:
    root: Path
    host: str = "127.0.99.7"
    port: int = 7830
    children: int = 2


class SpamAssassin:
    """Train Bayes with sa-learn; score through a private spamd."""

    def __init__(self, cfg: SpamAssassinConfig) -> None:
        self.cfg = cfg
        self.tools = procs.require(MISSING)
        self.spamd: subprocess.Popen[bytes] | None = None
        self.site = cfg.root / "site"
        self.bayes = cfg.root / "bayes"
        self.threshold = 5.0

    def setup(self) -> None:
        root = procs.fresh_dir(self.cfg.root)
        shutil.copytree("/etc/spamassassin", self.site)
        (self.site / "local.cf").write_text(LOCAL_CF.format(bayes=self.bayes))
        for sub in ("bayes", "home", "log"):
            (root / sub).mkdir()
        subprocess.run(["chmod", "-R", "a+rwX", str(root)], check=True)

    def reset_bayes(self) -> None:
        shutil.rmtree(self.bayes, ignore_errors=True)
        self.bayes.mkdir()
        self.bayes.chmod(0o777)

    def learn(self, folder: Path, spam: bool, timeout: float = 1800.0) -> str:
        """Learn every file in `folder` as spam or ham (one sa-learn run)."""
        argv = [
            self.tools["sa-learn"],
            f"--siteconfigpath={self.site}",
            "--local",
            "--no-sync",
            "--spam" if spam else "--ham",
            str(folder),
        ]
        out = procs.run(argv, timeout=timeout).stdout.strip()
        procs.run([self.tools["sa-learn"], f"--siteconfigpath={self.site}", "--sync"], timeout=600)
        subprocess.run(["chmod", "-R", "a+rwX", str(self.bayes)], check=True)
        return out

    def start(self, timeout: float = 120.0) -> None:
        c = self.cfg
        self.spamd = procs.start(
            [
                self.tools["spamd"],
                "-L",
                "-x",
                f"--siteconfigpath={self.site}",
                f"--listen={c.host}:{c.port}",
                f"--max-children={c.children}",
                f"--min-children={c.children}",
                f"--min-spare={c.children}",
                f"--max-spare={c.children}",
                "-u",
                "debian-spamd",
                f"--helper-home-dir={c.root / 'home'}",
                "--syslog=stderr",
                f"--pidfile={c.root / 'spamd.pid'}",
            ],
            c.root / "log/spamd.log",
        )
        procs.wait_port(c.host, c.port, timeout, self.spamd)

    def stop(self) -> None:
        procs.stop(self.spamd, timeout=30)
        self.spamd = None

    def score(self, raw: bytes, timeout: float = 300.0) -> tuple[float, bool]:
        """(score, is_spam at SpamAssassin's own threshold) of one message, via spamd."""
        with socket.create_connection((self.cfg.host, self.cfg.port), timeout=timeout) as s:
            s.sendall(b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(raw) + raw)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        reply = b"".join(chunks)
        m = _RESULT.search(reply)
        if m is None:
            raise RuntimeError(f"spamd: unexpected reply {reply[:200]!r}")
        self.threshold = float(m.group(3))
        return float(m.group(2)), m.group(1) == b"True"
