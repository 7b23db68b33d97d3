"""Finding Beyla, refusing a binary a non-root user could replace, and reading its version."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from coral_ebpf.beyla.binary import (
    ENV_VAR,
    BeylaNotFoundError,
    UnsafeBinaryError,
    check_binary_safe,
    resolve_binary,
)
from coral_ebpf.beyla.version import VersionDetectionError, detect_version
from tests.beyla_standin import install_standin, runs, write_control


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    return install_standin(tmp_path / "bin")


def test_lookup_order_config_then_env_then_path(tmp_path: Path) -> None:
    configured = install_standin(tmp_path / "configured")
    from_env = install_standin(tmp_path / "env")
    on_path = install_standin(tmp_path / "path")
    env = {ENV_VAR: str(from_env), "PATH": f"/nonexistent:{on_path.parent}"}
    assert resolve_binary(configured, env).source == "config beyla.binary"
    assert resolve_binary(configured, env).path == configured
    assert resolve_binary(None, env).path == from_env
    assert resolve_binary(None, {"PATH": f"/nonexistent:{on_path.parent}"}).path == on_path
    assert resolve_binary(None, {"PATH": str(on_path.parent)}).source == "PATH"


def test_missing_binaries_are_named_and_never_fall_through(tmp_path: Path, standin: Path) -> None:
    env = {ENV_VAR: str(standin), "PATH": str(standin.parent)}
    with pytest.raises(BeylaNotFoundError, match=r"config beyla\.binary names /nope/beyla, which does not exist"):
        resolve_binary(Path("/nope/beyla"), env)
    with pytest.raises(BeylaNotFoundError, match=r"\$CORAL_EBPF_BEYLA_BIN names /nope/beyla"):
        resolve_binary(None, {ENV_VAR: "/nope/beyla", "PATH": str(standin.parent)})
    with pytest.raises(BeylaNotFoundError, match="none is on PATH") as caught:
        resolve_binary(None, {"PATH": str(tmp_path / "empty")})
    assert "coral-ebpf beyla install" in caught.value.hint
    with pytest.raises(BeylaNotFoundError, match="relative path"):
        resolve_binary(Path("bin/beyla"), {})


def test_group_writable_directory_is_refused_naming_it_and_its_mode(standin: Path) -> None:
    os.chmod(standin.parent, 0o775)
    with pytest.raises(UnsafeBinaryError) as caught:
        check_binary_safe(standin)
    assert f"{standin.parent}, on its path, is writable by group (mode 0775, owner uid 0)" in caught.value.message
    assert f"chmod go-w {standin.parent}" in caught.value.hint


def test_other_writable_binary_is_refused(standin: Path) -> None:
    os.chmod(standin, 0o757)
    with pytest.raises(UnsafeBinaryError, match=r"it is writable by others \(mode 0757"):
        check_binary_safe(standin)


def test_binary_or_directory_owned_by_a_user_is_refused(standin: Path) -> None:
    os.chown(standin, 65534, 0)
    with pytest.raises(UnsafeBinaryError, match="is owned by uid 65534, not root"):
        check_binary_safe(standin)
    os.chown(standin, 0, 0)
    os.chown(standin.parent, 1000, 1000)
    with pytest.raises(UnsafeBinaryError, match=f"{standin.parent}, on its path, is owned by uid 1000"):
        resolve_binary(standin, {})


def test_symlink_into_an_unsafe_directory_is_refused(tmp_path: Path, standin: Path) -> None:
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir(mode=0o777)
    os.chmod(unsafe, 0o777)
    target = unsafe / "beyla"
    shutil.copy2(standin, target)
    link_dir = tmp_path / "links"
    link_dir.mkdir(mode=0o755)
    (link_dir / "beyla").symlink_to(target)
    with pytest.raises(UnsafeBinaryError, match=f"{unsafe}, on its path, is writable by group and others"):
        check_binary_safe(link_dir / "beyla")
    # A symlink to a safe binary is fine, and the real path is returned.
    (link_dir / "good").symlink_to(standin)
    assert check_binary_safe(link_dir / "good") == standin


def test_root_owned_sticky_directory_is_accepted(standin: Path) -> None:
    # /tmp (1777) is on the path of every pytest tmp_path: others cannot replace root's entries in it.
    assert str(standin).startswith("/tmp/")
    assert check_binary_safe(standin) == standin


def test_non_executable_is_refused(standin: Path) -> None:
    os.chmod(standin, 0o644)
    with pytest.raises(BeylaNotFoundError, match="is not executable"):
        check_binary_safe(standin)


def test_version_is_read_from_the_start_up_line_of_a_new_release(tmp_path: Path, standin: Path) -> None:
    work = tmp_path / "work"
    info = detect_version(standin, work)
    assert (str(info.version), info.revision) == ("v3.35.0", "f00dcafe")
    probe_run = runs(standin.parent)[-1]
    # The probe ran with no capabilities at all and in its own network namespace.
    assert probe_run["caps"] == 0
    assert probe_run["netns"] != os.stat("/proc/self/ns/net").st_ino
    assert probe_run["env"].get("BEYLA_LOG_FORMAT") == "json"


def test_version_from_an_old_release_that_prints_it_first_in_text(tmp_path: Path, standin: Path) -> None:
    write_control(standin.parent, {"version": "v2.7.8"})
    info = detect_version(standin, None)
    assert str(info.version) == "v2.7.8"
    assert info.line.startswith("time=") and 'msg="Grafana Beyla"' in info.line


def test_version_is_cached_per_path_mtime_and_size(tmp_path: Path, standin: Path) -> None:
    work = tmp_path / "work"
    detect_version(standin, work)
    detect_version(standin, work)
    assert len(runs(standin.parent)) == 1
    assert (work / "version-cache.json").stat().st_mode & 0o777 == 0o600
    write_control(standin.parent, {"version": "v3.10.0"})
    # Same file: still cached. A new binary (different mtime/size) is probed again.
    assert str(detect_version(standin, work).version) == "v3.35.0"
    later = time.time() + 5
    os.utime(standin, (later, later))
    assert str(detect_version(standin, work).version) == "v3.10.0"
    assert len(runs(standin.parent)) == 2


def test_a_binary_that_fails_before_its_version_line_says_why(standin: Path) -> None:
    write_control(standin.parent, {"version": "v3.35.0", "fail": "kernel_too_old"})
    with pytest.raises(VersionDetectionError) as caught:
        detect_version(standin, None)
    assert caught.value.diagnosis is not None and caught.value.diagnosis.kind == "kernel_too_old"
    assert "Minimum required version is 5.8" in caught.value.message


def test_something_that_is_not_beyla_is_reported(tmp_path: Path) -> None:
    directory = tmp_path / "bin"
    directory.mkdir(mode=0o755)
    fake = directory / "beyla"
    fake.write_text("#!/bin/sh\necho hello\n")
    os.chmod(fake, 0o755)
    with pytest.raises(VersionDetectionError, match="printed no 'Grafana Beyla' version line"):
        detect_version(fake, None, timeout=5)
