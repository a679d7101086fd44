"""A private Dovecot for tests: its own config in a directory, reading the host's Maildirs.

Nothing of the system's mail setup is used: the config, runtime directory, state,
indexes and the passwd-file (the test's users with PLAIN passwords) all live in
`workdir`; Dovecot runs in the foreground (`dovecot -F -c CONF`) as a subprocess and
listens for IMAP on one loopback address and port. The Maildirs are the host's, in
Maildir++ layout (`.Junk` is the Junk folder).

Dovecot refuses to open mail as root, so when the tests run as root the mail is opened as
`nobody` (the Maildirs are handed to it, and `workdir` must be traversable by it); run
as another user, everything is that user's.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CONFIG = """\
protocols = imap
base_dir = {work}/run
state_dir = {work}/state
instance_name = mxflow-test-{port}
log_path = {work}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal}
default_internal_group = {internal_group}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{maildirs}/%Lu:LAYOUT=maildir++:INDEX={work}/index/%Lu
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {work}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={work}/home/%Lu
}}
service imap-login {{
  inet_listener imap {{
    address = {address}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
{chroot}}}
{unprivileged}"""

UNPRIVILEGED = """\
service anvil {
  chroot =
}
service auth {
  user = $default_internal_user
}
"""


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot",) if os.access(p, os.X_OK)), None
    )


def _wait_for_port(address: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dovecot exited {proc.returncode}: {_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"dovecot did not listen on {address}:{port}: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"


@contextlib.contextmanager
def serve_dovecot(
    workdir: Path, maildirs: Path, users: dict[str, str], address: str, port: int
) -> Iterator[None]:
    """Dovecot serving `maildirs` over IMAP at address:port to `users` (address: password)."""
    binary = dovecot_binary()
    assert binary is not None
    root = os.geteuid() == 0
    me = pwd.getpwuid(os.geteuid()).pw_name
    mail_user = pwd.getpwnam("nobody") if root else pwd.getpwuid(os.geteuid())
    for sub in ("run", "state", "index", "home"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    if root:  # Dovecot opens mail as `nobody`: hand it the mail and its own directories
        for top in (maildirs, workdir / "index", workdir / "home"):
            for dirpath, _, files in os.walk(top):
                for name in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                    os.chown(name, mail_user.pw_uid, mail_user.pw_gid)
    (workdir / "passwd").write_text(
        "".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in users.items())
    )
    conf = workdir / "dovecot.conf"
    conf.write_text(
        CONFIG.format(
            work=workdir,
            port=port,
            address=address,
            maildirs=maildirs,
            uid=mail_user.pw_uid,
            gid=mail_user.pw_gid,
            internal="dovecot" if root else me,
            internal_group="dovecot" if root else grp.getgrgid(os.getegid()).gr_name,
            login="dovenull" if root else me,
            chroot="" if root else "  chroot =\n",
            unprivileged="" if root else UNPRIVILEGED,
        )
    )
    proc = subprocess.Popen(
        [binary, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for_port(address, port, proc, workdir / "dovecot.log")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
