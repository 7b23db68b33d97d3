"""`make deb`'s package installs into a clean Debian 12 root (debootstrap minbase, unpacked on a
tmpfs), with apt resolving python3 and python3-bpfcc from the registry; it runs
`coral-ebpf --version` and `coral-ebpf probe --json` there, and purges without leaving anything.

Building the package takes minutes (the dependencies' wheels); set CORAL_EBPF_DEB to a built .deb
to reuse it. The clean root is debootstrapped once and cached as a tarball
(~/.cache/coral-ebpf/deb-root, about 1.5 min to build); the apt lists and .debs the install
downloads are cached beside it, so a rerun takes under a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.agent_process import REPO
from tests.helpers.netns import in_starting_netns

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("CORAL_EBPF_DEB")
    if given:
        return Path(given)
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    out = tmp_path_factory.mktemp("deb")
    # The build downloads the dependencies' wheels from the package registry: it runs in the
    # namespace the session started in, not in the tests' private one, which has only loopback. It is
    # a client of the registry and starts no server.
    command, fds = in_starting_netns([str(REPO / "packaging" / "deb" / "build.sh"), str(out)])
    result = subprocess.run(
        command,
        pass_fds=fds,
        check=False,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def test_package_contents(deb: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True).stdout
    for path in (
        "./usr/bin/coral-ebpf",
        "./lib/systemd/system/coral-ebpf.service",
        "./etc/coral-ebpf/config.yaml",
        "./usr/share/doc/coral-ebpf/README.md",
        "./opt/coral-ebpf/lib/coral_ebpf/_data/bpf/",
    ):
        assert path in listing, path
    assert "/opt/coral-ebpf/lib/bcc/" not in listing  # BCC is Debian's, never PyPI's `bcc`
    fields = subprocess.run(["dpkg-deb", "--field", str(deb)], capture_output=True, text=True, check=True).stdout
    assert "Depends: python3 (>= 3." in fields and "python3-bpfcc" in fields
    unit = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout  # the unit runs the packaged binary
    assert b"ExecStart=/usr/bin/coral-ebpf start" in unit


@pytest.fixture(scope="module")
def clean_root() -> Path:
    """The debootstrap'd bookworm minbase tarball (built on the first run, from the registry)."""
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (make system-deps)")
    command, fds = in_starting_netns([str(REPO / "packaging" / "deb" / "clean-root.sh")])
    result = subprocess.run(command, pass_fds=fds, check=False, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return Path(result.stdout.strip().splitlines()[-1])


def test_installs_runs_and_purges_in_a_clean_root(deb: Path, clean_root: Path) -> None:
    # apt-get inside the root reaches the registry: the script runs in the session's starting
    # namespace and moves into an empty one of its own before it runs the package.
    script = str(REPO / "packaging" / "deb" / "test-install.sh")
    command, fds = in_starting_netns(["unshare", "-m", "--propagation", "private", script, str(deb), str(clean_root)])
    result = subprocess.run(command, pass_fds=fds, check=False, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "clean: no python3" in lines  # the root really is minimal: apt brought python3 in
    installed = next(line for line in lines if line.startswith("installed: "))
    assert installed.startswith("installed: coral-ebpf ") and installed.endswith("install ok installed"), lines
    assert any(line.startswith("bcc from: python3-bpfcc ") for line in lines)
    assert "which: /usr/bin/coral-ebpf" in lines
    assert any(line.startswith("version: coral-ebpf ") for line in lines)
    assert "probe rc: 0" in lines and any(line.startswith("probe keys: ['complete', 'components'") for line in lines)
    for component in ("agent_probes", "bcc_discovery", "red_bcc"):  # BCC (Debian's) compiles and attaches
        assert f"probe {component}: ok" in lines, lines
    assert {"files: ok", "config check: ok", "removed: clean", "dpkg: gone"} <= set(lines), lines
