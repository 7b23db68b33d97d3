"""Symlink- and owner-safe state, the control socket's peer check, and who holds the database.

A real unprivileged user (created with useradd for the module, removed after) plays the
attacker: it owns directories above the agent's paths, plants symlinks, and serves a forged
status document on a control socket. `coral-ebpf` runs as root, as in production.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers.agent_process import run_cli

VICTIM_TEXT = "root's precious file\n"


@pytest.fixture(scope="module")
def attacker() -> Iterator[pwd.struct_passwd]:
    name = f"coralt{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    """A directory every user can traverse (pytest's own tmp root is 0700), owned by root."""
    root = Path("/tmp") / f"coral-safety-{uuid.uuid4().hex[:8]}"
    root.mkdir(mode=0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_user(user: pwd.struct_passwd, *command: str) -> list[str]:
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command]


def attacker_dir(user: pwd.struct_passwd, path: Path) -> Path:
    path.mkdir(mode=0o755)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


def config(path: Path, state_dir: Path, socket: Path) -> Path:
    document = {
        "state_dir": str(state_dir),
        "control": {"socket": str(socket)},
        "otlp": {"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0"},
        "discovery": {"enabled": False},
        "beyla": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def victim(base: Path) -> Path:
    path = base / "victim.txt"
    path.write_text(VICTIM_TEXT, encoding="utf-8")
    os.chmod(path, 0o644)
    return path


def assert_untouched(path: Path) -> None:
    assert path.read_text(encoding="utf-8") == VICTIM_TEXT
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def start_refused(config_path: Path) -> str:
    result = run_cli("start", "--config", str(config_path), timeout=120)
    assert result.returncode == 1, (result.returncode, result.stderr)
    return result.stderr


def test_state_dir_under_a_directory_another_user_owns_is_refused(attacker: pwd.struct_passwd, base: Path) -> None:
    target = victim(base)
    hostile = attacker_dir(attacker, base / "hostile")
    state_dir = hostile / "state"
    # The attacker prepares the state dir with a lock file pointing at root's file.
    subprocess.run(as_user(attacker, "mkdir", str(state_dir)), check=True)
    subprocess.run(as_user(attacker, "ln", "-s", str(target), str(state_dir / "agent.lock")), check=True)
    stderr = start_refused(config(base / "c.yaml", state_dir, base / "run" / "control.sock"))
    assert str(state_dir) in stderr and attacker.pw_name in stderr, stderr
    assert_untouched(target)


def test_state_dir_owned_by_another_user_is_refused(attacker: pwd.struct_passwd, base: Path) -> None:
    state_dir = attacker_dir(attacker, base / "state")
    stderr = start_refused(config(base / "c.yaml", state_dir, base / "run" / "control.sock"))
    assert f"state directory {state_dir} is owned by {attacker.pw_name}" in stderr, stderr
    assert oct(state_dir.stat().st_mode & 0o777) == oct(0o755)  # not chmod-ed either


def test_state_dir_that_is_a_symlink_is_refused(base: Path) -> None:
    target = victim(base)
    real = base / "elsewhere"
    real.mkdir(mode=0o755)
    link = base / "state"
    link.symlink_to(real)
    stderr = start_refused(config(base / "c.yaml", link, base / "run" / "control.sock"))
    assert f"state directory {link} is a symbolic link (to {real})" in stderr, stderr
    assert oct(real.stat().st_mode & 0o777) == oct(0o755)
    assert_untouched(target)


def test_lock_file_that_is_a_symlink_is_refused(base: Path) -> None:
    target = victim(base)
    state_dir = base / "state"
    state_dir.mkdir(mode=0o700)
    (state_dir / "agent.lock").symlink_to(target)
    stderr = start_refused(config(base / "c.yaml", state_dir, base / "run" / "control.sock"))
    assert f"lock file {state_dir / 'agent.lock'} is a symbolic link" in stderr, stderr
    assert_untouched(target)


def test_control_socket_directory_owned_by_another_user_is_refused(attacker: pwd.struct_passwd, base: Path) -> None:
    sockets = attacker_dir(attacker, base / "sockets")
    stderr = start_refused(config(base / "c.yaml", base / "state", sockets / "control.sock"))
    assert f"control socket directory {sockets} is owned by {attacker.pw_name}" in stderr, stderr


FORGED_SERVER = textwrap.dedent(
    """
    import json, os, socket, sys
    path = sys.argv[1]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(4)
    print("ready", flush=True)
    body = json.dumps({"agent": {"pid": 1, "version": "forged"}, "storage": {"state": "running"}}).encode()
    while True:
        connection, _ = server.accept()
        try:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\nContent-Length: "
                               + str(len(body)).encode() + b"\\r\\nConnection: close\\r\\n\\r\\n" + body)
        except OSError:
            pass  # the client hung up (it refused to trust us)
        connection.close()
    """
)


def test_status_refuses_a_control_socket_served_by_another_user(attacker: pwd.struct_passwd, base: Path) -> None:
    sockets = attacker_dir(attacker, base / "sockets")
    socket_path = sockets / "control.sock"
    server = subprocess.Popen(
        as_user(attacker, "/usr/bin/python3", "-c", FORGED_SERVER, str(socket_path)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        config_path = config(base / "c.yaml", base / "state", socket_path)
        for args in (("status",), ("status", "--json")):
            result = run_cli(*args, "--config", str(config_path), timeout=60)
            assert result.returncode == 1, (result.stdout, result.stderr)
            assert f"served by process {server.pid} running as {attacker.pw_name}" in result.stderr, result.stderr
            assert "forged" not in result.stdout
    finally:
        server.kill()
        server.wait()


READER = textwrap.dedent(
    """
    import sys, time, duckdb
    connection = duckdb.connect(sys.argv[1], read_only=True)
    print("reading", flush=True)
    time.sleep(120)
    """
)


def test_start_names_a_read_only_reader_instead_of_blaming_an_agent(base: Path) -> None:
    state_dir = base / "state"
    state_dir.mkdir(mode=0o700)
    database = state_dir / "coral-ebpf.duckdb"
    subprocess.run([sys.executable, "-c", f"import duckdb; duckdb.connect({str(database)!r}).close()"], check=True)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(database)], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
        started = time.monotonic()
        stderr = start_refused(config(base / "c.yaml", state_dir, base / "run" / "control.sock"))
        assert f"database {database} is in use by process {reader.pid} (" in stderr, stderr
        assert "not an agent" in stderr and "another coral-ebpf agent" not in stderr, stderr
        assert time.monotonic() - started < 120
    finally:
        reader.kill()
        reader.wait()
