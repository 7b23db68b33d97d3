"""`coral-ebpf probe` as a person runs it: the JSON shape, the table, and the not-root path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Its outcome depends on the kernel: the VM suites (make vm-test, make vagrant-test) run it.
pytestmark = pytest.mark.kernel

REQUIRED_FEATURES = (
    "bpf_syscall", "btf", "jit", "ringbuf", "perf_event_array", "tracepoint", "raw_tracepoint", "kprobe", "uprobe",
    "fentry", "bcc_compile", "kernel_headers",
)  # fmt: skip
COMPONENTS = ("bcc_discovery", "beyla_application", "beyla_network", "red_bcc", "agent_probes")
NOBODY = 65534


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory another user can read (pytest's tmp_path is 0700), for the not-root run."""
    with tempfile.TemporaryDirectory(prefix="coral-probe-cli-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


def write_config(directory: Path, state_dir: Path) -> Path:
    config = directory / "config.yaml"
    config.write_text(f"state_dir: {state_dir}\n")
    config.chmod(0o644)
    return config


def run_cli(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "coral_ebpf", "probe", *args]
    if user is not None:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is not installed")
        command = [setpriv, f"--reuid={user}", f"--regid={user}", "--clear-groups", "--inh-caps=-all", *command]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd="/", env=env)


def test_json_shape(tmp_path: Path) -> None:
    result = run_cli("--json", "--config", str(write_config(tmp_path, tmp_path / "state")))
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert {"kernel", "features", "components", "duration_ms"} <= set(report)
    assert report["kernel"]["release"] == os.uname().release
    for name in REQUIRED_FEATURES:
        feature = report["features"][name]
        assert set(feature) == {"available", "detail"}
        assert isinstance(feature["available"], bool) and isinstance(feature["detail"], str) and feature["detail"]
    for name in COMPONENTS:
        verdict = report["components"][name]
        assert set(verdict) == {"ok", "reason", "fix"}
        assert isinstance(verdict["ok"], bool) and verdict["reason"]
        assert verdict["ok"] or verdict["fix"], f"{name} fails without a fix hint"
    assert isinstance(report["duration_ms"], int | float) and report["duration_ms"] > 0
    assert report["complete"] is True
    # The merged headers tree (if one is needed) lives in the configured state dir and nowhere else.
    headers = report["features"]["kernel_headers"]["detail"]
    assert str(tmp_path / "state") in headers or "running kernel" in headers


def test_table_output(tmp_path: Path) -> None:
    result = run_cli("--config", str(write_config(tmp_path, tmp_path / "state")))
    assert result.returncode == 0, result.stderr
    for text in ("feature", "kprobe", "Components", "beyla_application", "reason", "Context", "probe took"):
        assert text in result.stdout


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("state_dri: /tmp/x\n")
    result = run_cli("--config", str(config))
    assert result.returncode == 2
    assert "state_dri" in result.stderr and "state_dir" in result.stderr


def test_not_root_says_so_and_prints_what_it_can(public_dir: Path) -> None:
    config = write_config(public_dir, public_dir / "state")
    result = run_cli("--json", "--config", str(config), user=NOBODY)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "root" in result.stderr
    report = json.loads(result.stdout)
    assert report["complete"] is False
    assert any("root" in note for note in report["notes"])
    assert report["kernel"]["release"] == os.uname().release  # read without root
    assert report["context"]["euid"] == NOBODY
    assert not report["features"]["bpf_syscall"]["available"]
    assert "not tried" in report["features"]["kprobe"]["detail"]
    for verdict in report["components"].values():
        assert not verdict["ok"] and "root" in verdict["fix"]
    assert not (public_dir / "state").exists()  # nothing written by the unprivileged run
