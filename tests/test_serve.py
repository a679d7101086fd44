"""`mxflow serve`: an operator's mistake is one line and a non-zero exit; one node per
data directory (a lock the kernel drops when the node dies, even by kill -9)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mxflow.datadir import LOCK_NAME
from tests.conftest import free_port, unique_loopback

MXFLOW = [sys.executable, "-m", "mxflow"]


def node_toml(address: str, port: int, *, extra: str = "", tls: str = "none") -> str:
    listener = f'address = "{address}"\nport = {port}\ntls = "{tls}"\n'
    if tls != "none":
        listener += 'cert = "tls/n.crt"\nkey = "tls/n.key"\n'
    return f'[node]\nname = "n1"\nhostname = "n1.test"\n\n[[listeners]]\n{listener}\n{extra}'


def serve(config: Path, data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*MXFLOW, "serve", "--config", str(config), "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def serve_fails(config: Path, data_dir: Path, *extra: str) -> tuple[int, str]:
    proc = serve(config, data_dir, *extra)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def wait_listening(address: str, port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {address}:{port}")


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_bytes(node_toml("127.0.0.1", 0).encode() + b"# \xff\n")
    status, err = serve_fails(config, tmp_path / "data")
    assert status == 2
    assert "UTF-8" in one_line(err)


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(node_toml(unique_loopback(), 0))
    (tmp_path / "data").write_text("not a directory")
    status, err = serve_fails(config, tmp_path / "data")
    assert status == 2
    assert "is not a directory" in one_line(err)


def test_bad_tls_key(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(node_toml(unique_loopback(), 0, tls="starttls"))
    data = tmp_path / "data"
    (data / "tls").mkdir(parents=True)
    (data / "tls" / "n.crt").write_text("-----BEGIN CERTIFICATE-----\nnonsense\n")
    (data / "tls" / "n.key").write_text("not a key")
    status, err = serve_fails(config, data)
    assert status == 2
    line = one_line(err)
    assert "listeners[0]" in line and "not a usable certificate and key" in line


def test_port_in_use(tmp_path: Path) -> None:
    address = unique_loopback()
    with socket.socket() as holder:
        holder.bind((address, 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = tmp_path / "node.toml"
        config.write_text(node_toml(address, port))
        status, err = serve_fails(config, tmp_path / "data")
    assert status == 3
    line = one_line(err)
    assert f"cannot listen on {address}:{port}" in line and "already in use" in line


def test_unknown_log_level_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(node_toml(unique_loopback(), 0))
    status, err = serve_fails(config, tmp_path / "data", "--log-level", "LOUD")
    assert status == 2
    assert "invalid choice: 'LOUD'" in err


def test_one_node_per_data_dir_and_restart_after_kill_9(tmp_path: Path) -> None:
    address = unique_loopback()
    port = free_port(address)
    config = tmp_path / "node.toml"
    config.write_text(node_toml(address, port, extra='[log]\nformat = "json"\n'))
    other = tmp_path / "other.toml"
    other.write_text(node_toml(address, free_port(address)))
    data = tmp_path / "data"
    first = serve(config, data)
    try:
        wait_listening(address, port, first)
        status, err = serve_fails(other, data)
        assert status == 3
        line = one_line(err)
        assert f"data dir {data} is in use" in line and f"pid {first.pid}" in line
        assert not list((data / "spool" / "control").glob("*"))  # it touched nothing
        first.kill()  # kill -9: no cleanup runs
        first.wait(timeout=30)
        assert (data / LOCK_NAME).exists()
        second = serve(config, data)
        try:
            wait_listening(address, port, second)
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
        records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert any("listening on" in r["message"] for r in records), err
        assert {"time", "node", "logger", "level", "message"} <= set(records[0])
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_the_lock_file_records_the_owner(tmp_path: Path) -> None:
    from mxflow.datadir import lock
    from mxflow.errors import Unavailable

    held = lock(tmp_path / "d")
    try:
        assert (tmp_path / "d" / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        try:
            lock(tmp_path / "d")  # a second open file description: refused, as in another node
        except Unavailable as exc:
            assert f"pid {os.getpid()}" in str(exc)
        else:
            raise AssertionError("a second lock on the same data dir was granted")
    finally:
        held.release()
    lock(tmp_path / "d").release()


def test_workers_share_the_lock_of_their_supervisor(tmp_path: Path) -> None:
    """With [server] workers = 2 the workers inherit the lock: the directory stays owned."""
    address = unique_loopback()
    port = free_port(address)
    config = tmp_path / "node.toml"
    config.write_text(node_toml(address, port, extra="[server]\nworkers = 2\n"))
    data = tmp_path / "data"
    supervisor = serve(config, data)
    try:
        wait_listening(address, port, supervisor)
        status, err = serve_fails(config, data)
        assert status == 3 and "is in use" in one_line(err)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        _, err = supervisor.communicate(timeout=60)
    assert supervisor.returncode == 0, err


def test_trace_database_that_cannot_be_opened(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(node_toml(unique_loopback(), 0))
    (tmp_path / "data" / "trace.sqlite").mkdir(parents=True)  # a directory, not a database
    status, err = serve_fails(config, tmp_path / "data")
    assert status == 2
    assert "trace database" in one_line(err)


def test_event_loop_is_uvloop_unless_asked_for_asyncio(tmp_path: Path) -> None:
    """`[server] event_loop`: uvloop by default, asyncio's own loop on request; each serves
    a whole SMTP session and says which loop it runs on."""
    for setting, expected in (("", "uvloop"), ('[server]\nevent_loop = "asyncio"\n', "asyncio")):
        address = unique_loopback()
        port = free_port(address)
        config = tmp_path / f"{expected}.toml"
        config.write_text(node_toml(address, port, extra=setting))
        proc = serve(config, tmp_path / f"data-{expected}")
        try:
            wait_listening(address, port, proc)
            with socket.create_connection((address, port), timeout=10) as sock:
                reader = sock.makefile("rb")
                assert reader.readline().startswith(b"220 ")
                sock.sendall(b"NOOP\r\nQUIT\r\n")
                assert reader.readline().startswith(b"250 ")
                assert reader.readline().startswith(b"221 ")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"(event loop {expected})" in err, err
