"""Service names from the environment, cgroups and container ids, and this process as /proc shows it."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import psutil
import pytest

from coral_ebpf.probes.linux import procfs


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (b"PATH=/bin\0OTEL_SERVICE_NAME=checkout\0SERVICE_NAME=other\0", "checkout"),
        (b"SERVICE_NAME=billing\0", "billing"),
        (b"OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod,service.name=cart\0SERVICE_NAME=x\0", "cart"),
        (b"OTEL_SERVICE_NAME=  \0SERVICE_NAME=fallback\0", "fallback"),  # blank means unset
        (b"OTEL_SERVICE_NAME=a=b\0", "a=b"),  # only the first '=' separates
        (b"HOME=/root\0", None),
        (b"", None),
        (b"garbage-without-equals\0\xff\xfe=\0", None),
    ],
)
def test_service_name_from_the_environment(environ: bytes, expected: str | None) -> None:
    assert procfs.service_name(procfs.parse_environ(environ)) == expected


def test_cgroup_path_prefers_the_unified_hierarchy() -> None:
    text = "12:memory:/legacy/path\n0::/system.slice/nginx.service\n"
    assert procfs.cgroup_path(text) == "/system.slice/nginx.service"
    assert procfs.cgroup_path("4:memory:/process_api/abc\n0::/\n") == "/process_api/abc"
    assert procfs.cgroup_path("0::/\n") == "/"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/system.slice/docker-" + "a" * 64 + ".scope", "a" * 64),
        ("/kubepods/besteffort/pod1234/" + "b" * 64, "b" * 64),
        ("/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + "c" * 64 + ".scope", "c" * 64),
        ("/machine.slice/libpod-" + "d" * 64 + ".scope/container", "d" * 64),
        ("/system.slice/nginx.service", None),
        ("/process_api/286e37073a6c39e6ff9a73012d2c2199", None),  # 32 hex digits: not a container id
    ],
)
def test_container_id_from_cgroup(path: str, expected: str | None) -> None:
    assert procfs.container_id_from_cgroup(path) == expected


def test_inspect_this_process() -> None:
    found = procfs.inspect(os.getpid())
    assert found is not None
    assert found.exe == os.path.realpath(sys.executable)
    assert found.cmdline == tuple(psutil.Process().cmdline())
    assert abs(found.start_time - psutil.Process().create_time()) < 0.05
    expected_name = procfs.service_name(procfs.parse_environ(Path("/proc/self/environ").read_bytes()))
    assert found.service_name == (expected_name or os.path.basename(found.exe))
    assert procfs.start_ticks(os.getpid()) == found.start_ticks


def test_inspect_a_pid_that_does_not_exist() -> None:
    assert procfs.inspect(2**22 + 12345) is None
    assert procfs.start_ticks(2**22 + 12345) is None
    assert procfs.socket_inodes(2**22 + 12345) == set()


def test_socket_inodes_and_holders_of_this_process() -> None:
    with socket.socket() as sock:
        inode = os.fstat(sock.fileno()).st_ino
        assert inode in procfs.socket_inodes(os.getpid())
        assert os.getpid() in procfs.holders_of({inode})[inode]
    assert procfs.holders_of(set()) == {}


def test_task_netns_matches_proc() -> None:
    assert procfs.task_netns(os.getpid()) == os.stat("/proc/self/ns/net").st_ino


def test_service_namespace_and_resource_attributes() -> None:
    environ = procfs.parse_environ(b"OTEL_RESOURCE_ATTRIBUTES=a=1, service.namespace = shop ,x=\0HOME=/root\0")
    assert procfs.resource_attribute(environ, "a") == "1"
    assert procfs.service_namespace(environ) == "shop"
    assert procfs.service_namespace({"OTEL_SERVICE_NAMESPACE": "ops", **environ}) == "ops"
    assert procfs.service_namespace({}) == ""


def test_socket_inode_of_an_fd() -> None:
    with socket.socket() as sock:
        assert procfs.socket_inode(os.getpid(), sock.fileno()) == os.fstat(sock.fileno()).st_ino
    with open("/proc/self/stat", "rb") as handle:
        assert procfs.socket_inode(os.getpid(), handle.fileno()) is None
