"""An mxflow node under test: `mxflow serve --config FILE` as a subprocess.

The config comes from bench/configs/*.toml, rendered into the run's folder with the
addresses, ports and data folder of this run (plain text substitution of the defaults the
files are written with, so the files stay valid TOML that `mxflow serve` also runs as is).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lib import procs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class MxflowConfig:
    template: Path
    root: Path  # data folder of the run (wiped at start)
    host: str
    port: int
    replace: dict[str, str] = field(default_factory=dict)  # default text -> this run's text
    exe: Path | None = None  # another checkout's `mxflow` (before/after a change); else ours


class Mxflow:
    def __init__(self, cfg: MxflowConfig) -> None:
        self.cfg = cfg
        self.exe = cfg.exe or procs.VENV_BIN / "mxflow"
        if not self.exe.exists():
            raise procs.Missing(f"{self.exe} does not exist: run `make venv` in {procs.REPO}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_file = cfg.root / "node.toml"
        self.log = cfg.root.parent / f"{cfg.root.name}.log"

    def render(self) -> Path:
        text = self.cfg.template.read_text()
        for old, new in self.cfg.replace.items():
            text = text.replace(old, new)
        text = re.sub(
            r"^data_dir\s*=.*$", f'data_dir = "{self.cfg.root / "data"}"', text, flags=re.M
        )
        self.config_file.write_text(text)
        return self.config_file

    def start(self, timeout: float = 60.0) -> None:
        if not procs.port_free(self.cfg.host, self.cfg.port):
            raise RuntimeError(f"{self.cfg.host}:{self.cfg.port} is already in use")
        procs.fresh_dir(self.cfg.root)
        self.log.unlink(missing_ok=True)
        self.render()
        self.proc = procs.start(
            [str(self.exe), "serve", "--config", str(self.config_file)], self.log, cwd=self.cfg.root
        )
        procs.wait_port(self.cfg.host, self.cfg.port, timeout, self.proc)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def stop(self) -> int | None:
        """SIGTERM, wait; the exit status (None if it was not running)."""
        return procs.stop(self.proc, timeout=30)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
