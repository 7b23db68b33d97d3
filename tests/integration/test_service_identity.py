"""Service identity on real processes: each rule names a process started here, read from its /proc.

Python, Java, Node, Ruby and Perl processes run for real; systemd-like units and a container are
real cgroup2 directories this test creates and moves the process into (removed afterwards). No
container runtime runs here, so the container's metadata is a Docker file under a test root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.discovery.identity import IdentityResolver, IdentityRule, ServiceIdentity
from coral_ebpf.probes.linux import procfs
from tests.helpers.timing import eventually

SLEEP_PY = "import time\ntime.sleep(600)\n"
ASGI_APP = textwrap.dedent(
    """
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    """
)


@contextlib.contextmanager
def running(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Iterator[int]:
    """A process that stays up until the block ends; yields its pid once its command line is its own."""
    process = subprocess.Popen(
        args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def exec_done() -> bool:
            # Right after fork (and during exec) /proc shows the parent's image or an empty command line.
            info = procfs.inspect(process.pid)
            # A script's shebang adds the interpreter in front: compare the tail.
            return info is not None and info.cmdline[len(info.cmdline) - len(args) + 1 :] == tuple(args[1:])

        eventually(exec_done, timeout=10, what=f"{args[0]} running")
        yield process.pid
    finally:
        process.kill()
        process.wait()


def identify(pid: int, resolver: IdentityResolver | None = None, ports: tuple[int, ...] = ()) -> ServiceIdentity:
    info = procfs.inspect(pid)
    assert info is not None, f"pid {pid} is gone"
    return (resolver or IdentityResolver(hostname="host-a")).resolve(info, ports)


def named(pid: int, rule: IdentityRule, resolver: IdentityResolver | None = None) -> str:
    identity = identify(pid, resolver)
    assert identity.rule == rule, identity
    assert identity.instance_id.endswith(f":{pid}")
    return identity.name


def cgroup2_root() -> Path:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[2] == "cgroup2":
            return Path(fields[1])
    pytest.skip("no cgroup2 hierarchy is mounted")


@contextlib.contextmanager
def in_cgroup(pid: int, relative: str) -> Iterator[None]:
    """Move `pid` into a new cgroup2 directory (as systemd or a container runtime would), then remove it."""
    directory = cgroup2_root() / relative
    directory.mkdir(parents=True)
    try:
        (directory / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        with contextlib.suppress(OSError):
            (cgroup2_root() / "cgroup.procs").write_text(str(pid))
        for path in [directory, *directory.relative_to(cgroup2_root()).parents]:
            if str(path) in (".", ""):
                break
            target = path if path.is_absolute() else cgroup2_root() / path
            with contextlib.suppress(OSError):
                target.rmdir()  # only the directories this test created are empty


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(SLEEP_PY)
    (tmp_path / "shopapi.py").write_text(ASGI_APP)
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "__main__.py").write_text(SLEEP_PY)
    return tmp_path


def test_environment_names_first(app_dir: Path) -> None:
    script = str(app_dir / "app.py")
    with running([sys.executable, script], env={"OTEL_SERVICE_NAME": "payments"}) as pid:
        assert named(pid, IdentityRule.ENVIRONMENT) == "payments"
    attributes = "deployment.environment=prod, service.name=ledger ,service.namespace=finance"
    with running([sys.executable, script], env={"OTEL_RESOURCE_ATTRIBUTES": attributes}) as pid:
        identity = identify(pid)
        assert (identity.name, identity.namespace, identity.rule) == ("ledger", "finance", IdentityRule.ENVIRONMENT)
    with running([sys.executable, script], env={"SERVICE_NAME": "legacy"}) as pid:
        assert named(pid, IdentityRule.ENVIRONMENT) == "legacy"


def test_python_command_lines(app_dir: Path) -> None:
    with running([sys.executable, str(app_dir / "app.py")]) as pid:
        assert named(pid, IdentityRule.COMMAND_LINE) == "app"
    with running([sys.executable, "-u", "billing/__main__.py"], cwd=app_dir) as pid:
        assert named(pid, IdentityRule.COMMAND_LINE) == "billing"
    with running([sys.executable, "-m", "billing"], cwd=app_dir) as pid:
        assert named(pid, IdentityRule.COMMAND_LINE) == "billing"
    with running([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"]) as pid:
        assert named(pid, IdentityRule.COMMAND_LINE) == "http.server"
    uvicorn = [sys.executable, "-m", "uvicorn", "shopapi:app", "--host", "127.0.0.1", "--port", "0"]
    with running(uvicorn, cwd=app_dir) as pid:
        assert named(pid, IdentityRule.COMMAND_LINE) == "shopapi"
    console_script = Path(sys.executable).with_name("uvicorn")
    if console_script.exists():  # the launcher pip writes: `python .../bin/uvicorn module:app`
        with running([str(console_script), "--port", "0", "shopapi:app"], cwd=app_dir) as pid:
            assert identify(pid).name == "shopapi"


@pytest.mark.skipif(not (shutil.which("javac") and shutil.which("jar")), reason="no JDK here")
def test_java_jar_and_main_class(tmp_path: Path) -> None:
    source = tmp_path / "src/com/example/Payments.java"
    source.parent.mkdir(parents=True)
    source.write_text(
        "package com.example;\npublic class Payments {\n"
        "  public static void main(String[] a) throws Exception { Thread.sleep(600000); }\n}\n"
    )
    classes = tmp_path / "classes"
    subprocess.run(["javac", "-d", str(classes), str(source)], check=True, timeout=120)
    jar = tmp_path / "cart-2.4.1.jar"
    subprocess.run(["jar", "cfe", str(jar), "com.example.Payments", "-C", str(classes), "."], check=True, timeout=120)
    with running(["java", "-Xmx64m", "-jar", str(jar)]) as pid:
        assert named(pid, IdentityRule.COMMAND_LINE) == "cart"
    with running(["java", "-Xmx64m", "-cp", str(classes), "com.example.Payments"]) as pid:
        assert named(pid, IdentityRule.COMMAND_LINE) == "com.example.Payments"


@pytest.mark.parametrize(
    ("runtime", "relative", "code", "name"),
    [
        ("node", "checkout/index.js", "setInterval(() => {}, 1000);\n", "checkout"),
        ("ruby", "orders.rb", "sleep 600\n", "orders"),
        ("perl", "mailer.pl", "sleep 600;\n", "mailer"),
    ],
)
def test_other_runtimes(tmp_path: Path, runtime: str, relative: str, code: str, name: str) -> None:
    if shutil.which(runtime) is None:
        pytest.skip(f"{runtime} is not installed")
    script = tmp_path / relative
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(code)
    with running([runtime, str(script)]) as pid:
        assert named(pid, IdentityRule.COMMAND_LINE) == name


def test_executable_name_last(tmp_path: Path) -> None:
    binary = tmp_path / "gatewayd"
    shutil.copy("/bin/sleep", binary)
    with running([str(binary), "600"]) as pid:
        assert named(pid, IdentityRule.EXECUTABLE) == "gatewayd"


def test_systemd_units_from_the_process_cgroup(app_dir: Path) -> None:
    unit = f"fake-unit-{uuid.uuid4().hex[:8]}"
    with running([sys.executable, str(app_dir / "app.py")]) as pid:
        with in_cgroup(pid, f"system.slice/{unit}.service"):
            assert named(pid, IdentityRule.SYSTEMD_UNIT) == unit
        with in_cgroup(pid, f"system.slice/system-{unit}.slice/{unit}@2.service"):
            assert named(pid, IdentityRule.SYSTEMD_UNIT) == unit  # a template unit's instance
        user_unit = f"user.slice/user-4242.slice/user@4242.service/app.slice/{unit}-notes.service"
        with in_cgroup(pid, user_unit):
            assert named(pid, IdentityRule.SYSTEMD_UNIT) == f"{unit}-notes"
        with in_cgroup(pid, f"user.slice/user-4242.slice/session-{unit}.scope"):
            assert named(pid, IdentityRule.COMMAND_LINE) == "app"  # a login session is not a unit
        # The user's mapping comes before the unit, and may select by unit.
        config = parse_config_text(f"services:\n  - name: storefront\n    systemd_unit: '{unit}*'\n")
        with in_cgroup(pid, f"system.slice/{unit}.service"):
            assert named(pid, IdentityRule.CONFIG, IdentityResolver(config.services)) == "storefront"
    # The environment comes before everything.
    env = {"OTEL_SERVICE_NAME": "env-wins"}
    with (
        running([sys.executable, str(app_dir / "app.py")], env=env) as pid,
        in_cgroup(pid, f"system.slice/{unit}.service"),
    ):
        assert named(pid, IdentityRule.ENVIRONMENT) == "env-wins"


def test_container_name_by_the_cgroup_container_id(app_dir: Path, tmp_path: Path) -> None:
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    metadata = tmp_path / "root/var/lib/docker/containers" / container_id
    metadata.mkdir(parents=True)
    (metadata / "config.v2.json").write_text(json.dumps({"ID": container_id, "Name": "/inventory"}))
    resolver = IdentityResolver(container_root=tmp_path / "root")
    scope = f"system.slice/docker-{container_id}.scope"
    with running([sys.executable, str(app_dir / "app.py")]) as pid, in_cgroup(pid, scope):
        info = procfs.inspect(pid)
        assert info is not None and info.container_id == container_id
        assert named(pid, IdentityRule.CONTAINER, resolver) == "inventory"
        # Without the runtime's files the rule is skipped, never an error.
        assert named(pid, IdentityRule.COMMAND_LINE, IdentityResolver(container_root=tmp_path / "none")) == "app"


def test_config_mapping_by_port_executable_and_command_line(app_dir: Path) -> None:
    config = parse_config_text(
        textwrap.dedent(
            f"""
            services:
              - {{name: by-port, namespace: shop, open_ports: "8000-8099"}}
              - {{name: by-exe, exe_path: "{os.path.realpath(sys.executable)}", cmdline: "*billing*"}}
              - {{name: by-cmdline, cmdline: "* -m http.server *"}}
            """
        )
    )
    resolver = IdentityResolver(config.services)
    with running([sys.executable, str(app_dir / "app.py")]) as pid:
        identity = identify(pid, resolver, ports=(8042,))
        assert (identity.name, identity.namespace, identity.rule) == ("by-port", "shop", IdentityRule.CONFIG)
        assert identify(pid, resolver, ports=(9000,)).rule == IdentityRule.COMMAND_LINE
    with running([sys.executable, "-m", "billing"], cwd=app_dir) as pid:
        assert named(pid, IdentityRule.CONFIG, resolver) == "by-exe"
    with running([sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"]) as pid:
        assert named(pid, IdentityRule.CONFIG, resolver) == "by-cmdline"
