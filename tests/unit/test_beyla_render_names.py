"""Beyla is given discovery's names: each `discovery.instrument` selector carries `name` and `namespace`."""

from __future__ import annotations

from coral_ebpf.beyla.render import RenderTarget, render
from coral_ebpf.beyla.schema import schema_errors
from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.discovery.identity import IdentityResolver
from coral_ebpf.discovery.model import Listener, ServiceEntry
from coral_ebpf.probes.linux.procfs import ProcessInfo


def entry(pid: int, cmdline: tuple[str, ...], port: int, environ_namespace: str = "") -> ServiceEntry:
    info = ProcessInfo(
        pid=pid,
        start_ticks=1,
        comm="python3",
        exe="/usr/bin/python3.11",
        cmdline=cmdline,
        service_name="python3.11",
        cgroup="/",
        container_id=None,
        environ_namespace=environ_namespace,
    )
    identity = IdentityResolver(hostname="h").resolve(info, (port,))
    return ServiceEntry(
        pid=pid,
        netns=1,
        name=identity.name,
        exe=info.exe,
        cmdline=cmdline,
        listeners=(Listener(port),),
        identity=identity,
    )


def test_two_python_apps_are_two_named_selectors() -> None:
    services = [
        entry(10, ("python3", "-m", "http.server", "8000"), 8000),
        entry(11, ("python3", "-m", "uvicorn", "shop.api:app"), 9000, environ_namespace="shop"),
    ]
    rendered = render(BeylaSettings(), services, RenderTarget("http://127.0.0.1:4318"))
    assert rendered.document["discovery"]["instrument"] == [
        {"open_ports": "8000", "exe_path": "/usr/bin/python3.11", "name": "http.server"},
        {"open_ports": "9000", "exe_path": "/usr/bin/python3.11", "name": "shop.api", "namespace": "shop"},
    ]
    assert schema_errors(rendered.document) == []


def test_beyla_instance_ids_use_the_agent_host_name() -> None:
    services = [entry(10, ("python3", "app.py"), 8000)]
    rendered = render(BeylaSettings(), services, RenderTarget("http://127.0.0.1:4318", hostname="web-1"))
    assert rendered.document["attributes"] == {"instance_id": {"override_hostname": "web-1", "dns": False}}
    assert schema_errors(rendered.document) == []
    assert "attributes" not in render(BeylaSettings(), services, RenderTarget("http://127.0.0.1:4318")).document
