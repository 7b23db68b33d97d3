"""Service identity's pure rules: names from command lines and systemd units, `services:` matching and
validation, container names from runtime metadata laid out under a test root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coral_ebpf.agent.config import parse_config_text
from coral_ebpf.discovery.containers import container_name
from coral_ebpf.discovery.identity import IdentityResolver, IdentityRule
from coral_ebpf.discovery.mapping import ProcessFacts, ServiceMapping, parse_ports
from coral_ebpf.discovery.naming import command_line_name, systemd_unit, unit_service_name
from coral_ebpf.errors import ConfigError
from coral_ebpf.probes.linux.procfs import ProcessInfo

CONTAINER_ID = "ab" * 32
PY = "/usr/bin/python3.11"


@pytest.mark.parametrize(
    ("exe", "cmdline", "name"),
    [
        (PY, ("python3", "app.py"), "app"),
        (PY, ("python3", "-u", "/srv/shop/api.py", "--port", "80"), "api"),
        (PY, ("python3", "-X", "dev", "-W", "ignore", "worker.py"), "worker"),
        (PY, ("python3", "/srv/billing/__main__.py"), "billing"),
        (PY, ("python3", "-m", "http.server", "8000"), "http.server"),
        (PY, ("python3", "-mshop.api"), "shop.api"),
        (PY, ("python3", "-m", "uvicorn", "shop.api:app", "--port", "80"), "shop.api"),
        (PY, ("/venv/bin/python", "/venv/bin/uvicorn", "--host", "0.0.0.0", "orders.main:app"), "orders.main"),
        (PY, ("/venv/bin/python", "/venv/bin/gunicorn", "-w", "4", "mysite.wsgi:application"), "mysite.wsgi"),
        (PY, ("python3", "/venv/bin/hypercorn", "svc:create_app()"), "svc"),
        (PY, ("python3", "-m", "gunicorn"), "gunicorn"),
        (PY, ("python3", "-c", "import x"), None),
        (PY, ("python3",), None),
        ("/usr/bin/java", ("java", "-Xmx1g", "-jar", "/opt/shop/cart-2.4.1-SNAPSHOT.jar"), "cart"),
        ("/usr/bin/java", ("java", "-cp", "lib/*", "com.example.Payments", "--x"), "com.example.Payments"),
        ("/usr/bin/java", ("java", "-m", "shop.api/shop.api.Main"), "shop.api.Main"),
        ("/usr/bin/node", ("node", "--require", "otel.js", "server.js"), "server"),
        ("/usr/bin/node", ("node", "/srv/checkout/index.js"), "checkout"),
        ("/usr/bin/bun", ("bun", "run", "api.ts"), "api"),
        ("/usr/bin/ruby", ("ruby", "-I", "lib", "app.rb"), "app"),
        ("/usr/bin/php8.2", ("php", "-S", "127.0.0.1:8000", "router.php"), "router"),
        ("/usr/bin/dotnet", ("dotnet", "Orders.Api.dll"), "Orders.Api"),
        ("/usr/bin/perl", ("perl", "-I", "lib", "daemon.pl"), "daemon"),
        ("/usr/sbin/nginx", ("nginx: master process",), None),
        (PY, ("gunicorn: worker [shop.wsgi:application]",), "shop.wsgi"),
        ("/usr/bin/ruby3.1", ("puma 6.4.0 (tcp://0.0.0.0:3000) [storefront]",), "storefront"),
        (PY, ("celery worker",), None),
    ],
)
def test_command_line_names(exe: str, cmdline: tuple[str, ...], name: str | None) -> None:
    assert command_line_name(exe, cmdline) == name


@pytest.mark.parametrize(
    ("cgroup", "unit", "name"),
    [
        ("/system.slice/nginx.service", "nginx.service", "nginx"),
        ("/system.slice/system-worker.slice/worker@3.service", "worker@3.service", "worker"),
        ("/user.slice/user-1000.slice/user@1000.service/app.slice/notes.service", "notes.service", "notes"),
        ("/user.slice/user-1000.slice/user@1000.service/init.scope", None, None),
        ("/user.slice/user-1000.slice/session-4.scope", None, None),
        (f"/system.slice/docker-{CONTAINER_ID}.scope", None, None),
        ("/", None, None),
    ],
)
def test_systemd_units_from_cgroup_paths(cgroup: str, unit: str | None, name: str | None) -> None:
    assert systemd_unit(cgroup) == unit
    if unit is not None:
        assert unit_service_name(unit) == name


def facts(**changes: object) -> ProcessFacts:
    values: dict[str, object] = {
        "exe": "/usr/bin/python3.11",
        "cmdline": ("python3", "-m", "shop.api"),
        "ports": (8080,),
        "systemd_unit": "shop.service",
        "container": None,
    }
    values.update(changes)
    return ProcessFacts(**values)  # type: ignore[arg-type]


def test_mapping_selectors_all_have_to_match() -> None:
    assert parse_ports("80, 8000-8999", 0) == ((80, 80), (8000, 8999))
    mapping = ServiceMapping("shop", open_ports="80,8000-8999", exe_path="*/python3*")
    assert mapping.matches(facts())
    assert not mapping.matches(facts(ports=(9090,)))
    assert not mapping.matches(facts(exe="/usr/bin/node"))
    assert ServiceMapping("s", systemd_unit="shop").matches(facts())
    assert ServiceMapping("s", systemd_unit="shop.service").matches(facts())
    assert not ServiceMapping("s", systemd_unit="shop").matches(facts(systemd_unit=None))
    assert ServiceMapping("s", cmdline="*-m shop.*").matches(facts())
    assert ServiceMapping("s", container="web-*").matches(facts(container="web-1"))
    assert not ServiceMapping("s", container="web-*").matches(facts())


def info(**changes: object) -> ProcessInfo:
    values: dict[str, object] = {
        "pid": 42,
        "start_ticks": 1,
        "comm": "python3",
        "exe": "/usr/bin/python3.11",
        "cmdline": ("python3", "-m", "shop.api"),
        "service_name": "python3.11",
        "cgroup": "/user.slice/user-0.slice/session-1.scope",
        "container_id": None,
    }
    values.update(changes)
    return ProcessInfo(**values)  # type: ignore[arg-type]


def test_rules_apply_in_order(tmp_path: Path) -> None:
    config = parse_config_text(
        "services:\n  - {name: checkout, namespace: shop, open_ports: 8080}\n  - {name: never, exe_path: /nothing}\n"
    )
    resolver = IdentityResolver(config.services, hostname="h1", container_root=tmp_path)
    by_env = resolver.resolve(info(environ_name="from-env", environ_namespace="ns"), (8080,))
    assert (by_env.name, by_env.namespace, by_env.rule, by_env.instance_id) == (
        "from-env",
        "ns",
        IdentityRule.ENVIRONMENT,
        "h1:42",
    )
    by_config = resolver.resolve(info(cgroup="/system.slice/api.service"), (8080,))
    assert (by_config.name, by_config.namespace, by_config.rule) == ("checkout", "shop", IdentityRule.CONFIG)
    by_unit = resolver.resolve(info(cgroup="/system.slice/api.service"), (9090,))
    assert (by_unit.name, by_unit.rule) == ("api", IdentityRule.SYSTEMD_UNIT)
    by_command = resolver.resolve(info(), (9090,))
    assert (by_command.name, by_command.rule) == ("shop.api", IdentityRule.COMMAND_LINE)
    by_exe = resolver.resolve(info(exe="/opt/bin/gateway", cmdline=("gateway", "-c", "x")), ())
    assert (by_exe.name, by_exe.rule) == ("gateway", IdentityRule.EXECUTABLE)
    unreadable = resolver.resolve(info(exe="", cmdline=(), comm="kworker"), ())
    assert (unreadable.name, unreadable.rule) == ("kworker", IdentityRule.EXECUTABLE)
    # A container id with no runtime files (no Docker here): the rule is skipped, not an error.
    no_runtime = resolver.resolve(info(container_id=CONTAINER_ID), ())
    assert no_runtime.rule == IdentityRule.COMMAND_LINE


def test_container_names_from_docker_podman_and_containerd_files(tmp_path: Path) -> None:
    docker = tmp_path / "docker"
    (docker / "var/lib/docker/containers" / CONTAINER_ID).mkdir(parents=True)
    (docker / "var/lib/docker/containers" / CONTAINER_ID / "config.v2.json").write_text(
        json.dumps({"ID": CONTAINER_ID, "Name": "/web-frontend"})
    )
    assert container_name(CONTAINER_ID, docker) == "web-frontend"

    podman = tmp_path / "podman"
    store = podman / "var/lib/containers/storage/overlay-containers"
    store.mkdir(parents=True)
    store.joinpath("containers.json").write_text(json.dumps([{"id": "cd" * 32}, {"id": CONTAINER_ID, "names": ["db"]}]))
    assert container_name(CONTAINER_ID, podman) == "db"

    containerd = tmp_path / "containerd"
    bundle = containerd / "run/containerd/io.containerd.runtime.v2.task/k8s.io" / CONTAINER_ID
    bundle.mkdir(parents=True)
    bundle.joinpath("config.json").write_text(json.dumps({"annotations": {"io.kubernetes.cri.container-name": "cart"}}))
    assert container_name(CONTAINER_ID, containerd) == "cart"

    broken = tmp_path / "broken"
    (broken / "var/lib/docker/containers" / CONTAINER_ID).mkdir(parents=True)
    (broken / "var/lib/docker/containers" / CONTAINER_ID / "config.v2.json").write_text("{not json")
    assert container_name(CONTAINER_ID, broken) is None
    assert container_name(CONTAINER_ID, tmp_path / "absent") is None

    resolver = IdentityResolver(hostname="h", container_root=docker)
    by_container = resolver.resolve(info(container_id=CONTAINER_ID, cgroup=f"/docker-{CONTAINER_ID}.scope"))
    assert (by_container.name, by_container.rule) == ("web-frontend", IdentityRule.CONTAINER)
    by_mapping = IdentityResolver(
        parse_config_text("services: [{name: front, container: 'web-*'}]").services, container_root=docker
    ).resolve(info(container_id=CONTAINER_ID))
    assert (by_mapping.name, by_mapping.rule) == ("front", IdentityRule.CONFIG)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services:\n  - {name: a}\n", "services.0 ('a') has no selector"),
        ("services:\n  - {name: a, open_ports: 80}\n  - name: b\n    open_ports: '90-80'\n", "<config>:4: services.1"),
        ("services:\n  - {name: a, open_ports: '70000'}\n", "not a port or range in 1-65535"),
        ("services:\n  - {name: a, open_ports: http}\n", "open_ports"),
        ("services:\n  - {name: a, exe_path: python3}\n", "services.0.exe_path: 'python3' would never match"),
        ("services:\n  - {name: a, port: 80}\n", "port"),
        ("services:\n  - {open_ports: 80}\n", "name"),
    ],
)
def test_services_config_errors_name_the_entry(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config_text(text)
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    "cgroup",
    ["/system.slice/ssh.service", "/system.slice/cron.service", "/system.slice/serial-getty@ttyS0.service"],
)
def test_a_launcher_unit_does_not_name_what_it_started(cgroup: str, tmp_path: Path) -> None:
    # A command typed in an SSH session without a registered login session sits in ssh.service:
    # it is named by its command line, not "ssh".
    resolver = IdentityResolver(hostname="h", container_root=tmp_path)
    identity = resolver.resolve(info(cgroup=cgroup))
    assert identity.rule is not IdentityRule.SYSTEMD_UNIT and identity.name == "shop.api", identity
    by_unit = resolver.resolve(info(cgroup="/system.slice/shop-api.service"))
    assert (by_unit.name, by_unit.rule) == ("shop-api", IdentityRule.SYSTEMD_UNIT)
