"""`make deb`'s package installs into a clean root (an overlay of / with the checkout hidden),
runs `coral-ebpf --version` and `coral-ebpf probe --json`, and purges without leaving anything.

Building takes minutes (the dependencies' wheels); set CORAL_EBPF_DEB to a built .deb to reuse it.
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


def test_installs_runs_and_purges_in_a_clean_root(deb: Path) -> None:
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", str(REPO / "packaging" / "deb" / "test-install.sh"), str(deb),
         str(REPO)],
        check=False, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "which: /usr/bin/coral-ebpf" in lines
    assert any(line.startswith("version: coral-ebpf ") for line in lines)
    assert "probe rc: 0" in lines and any(line.startswith("probe keys: ['complete', 'components'") for line in lines)
    assert {"files: ok", "config check: ok", "removed: clean", "dpkg: gone"} <= set(lines), lines
