"""Parsing of what the probe reads rather than tries: capabilities, os-release, RHEL 4.18, configs, missing files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from coral_ebpf.capabilities import context as ctx
from coral_ebpf.probes.linux.bpf import kernel_version_code

# CapEff of this development machine: everything but CAP_SYS_RESOURCE (bit 24).
HOST_MASK = 0x000001FFFEFFFFFF


def test_cap_eff_bits_are_named() -> None:
    status = "Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\nCapBnd:\t000001ffffffffff\n"
    assert ctx.parse_cap_eff(status) == HOST_MASK
    caps = ctx.Capabilities(HOST_MASK)
    assert caps.has("CAP_BPF") and caps.has("CAP_PERFMON") and caps.has("CAP_CHECKPOINT_RESTORE")
    assert caps.has("CAP_SYS_ADMIN") and caps.has("CAP_NET_RAW") and caps.has("CAP_DAC_READ_SEARCH")
    assert not caps.has("CAP_SYS_RESOURCE")
    assert caps.missing(["CAP_BPF", "CAP_SYS_RESOURCE"]) == ["CAP_SYS_RESOURCE"]


@pytest.mark.parametrize(
    ("mask", "present"),
    [
        (0, set()),
        (1 << 39 | 1 << 38, {"CAP_BPF", "CAP_PERFMON"}),
        (1 << 21, {"CAP_SYS_ADMIN"}),
        ((1 << 41) - 1, set(ctx.CAPABILITIES)),
    ],
)
def test_each_capability_is_its_own_bit(mask: int, present: set[str]) -> None:
    caps = ctx.Capabilities(mask)
    assert {name for name in ctx.CAPABILITIES if caps.has(name)} == present
    assert caps.to_dict()["effective_mask"] == f"0x{mask:016x}"


def test_cap_eff_missing_or_garbled() -> None:
    assert ctx.parse_cap_eff("Name:\tx\n") is None
    assert ctx.parse_cap_eff("CapEff:\tnot-hex\n") is None
    caps = ctx.read_capabilities(Path("/nonexistent/status"))
    assert caps.effective is None and not caps.has("CAP_BPF")
    assert "unreadable" in caps.source


def test_os_release_debian_ubuntu_rhel() -> None:
    debian = ctx.parse_os_release(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
    )
    assert (debian.id, debian.version_id, debian.pretty_name) == ("debian", "12", "Debian GNU/Linux 12 (bookworm)")
    ubuntu = ctx.parse_os_release("NAME='Ubuntu'\nVERSION_ID=\"22.04\"\nID=ubuntu\nID_LIKE=debian\n# comment\n\n")
    assert ubuntu.id == "ubuntu" and ubuntu.id_like == ("debian",) and ubuntu.pretty_name == "Ubuntu"
    rhel = ctx.parse_os_release('NAME="Red Hat Enterprise Linux"\nID="rhel"\nID_LIKE="fedora"\nVERSION_ID="8.10"\n')
    assert rhel.id == "rhel" and rhel.id_like == ("fedora",) and rhel.version_id == "8.10"


def test_os_release_missing_files_say_so(tmp_path: Path) -> None:
    found = ctx.read_os_release((tmp_path / "a", tmp_path / "b"))
    assert found.id == "" and "none of" in found.source
    (tmp_path / "b").write_text("ID=alpine\n")
    assert ctx.read_os_release((tmp_path / "a", tmp_path / "b")).id == "alpine"


@pytest.mark.parametrize(
    ("release", "os_id", "version_id", "expected"),
    [
        ("4.18.0-553.el8_10.x86_64", "rhel", "8.10", True),
        ("4.18.0-240.el8.x86_64", "", "", True),  # .el8 in the release alone is enough
        ("4.18.0-513.5.1.el8_9.x86_64", "rocky", "8.9", True),
        ("4.18.0-custom", "almalinux", "8.8", True),  # RHEL family 8 without .el8 in the release
        ("4.18.0-25-generic", "ubuntu", "18.10", False),
        ("4.19.0-27-amd64", "debian", "10", False),
        ("5.14.0-427.el9.x86_64", "rhel", "9.4", False),
    ],
)
def test_rhel8_kernel_detection(release: str, os_id: str, version_id: str, expected: bool) -> None:
    os_release = ctx.OsRelease(id=os_id, version_id=version_id)
    assert ctx.is_rhel8_kernel(release, os_release) is expected
    info = ctx.kernel_info(release=release, version="#1 SMP", os_release=os_release, proc_version=Path("/nonexistent"))
    assert info.rhel8 is expected
    assert info.numbers[:2] == ctx.version_tuple(release)[:2]


def test_rhel8_detected_from_proc_version() -> None:
    assert ctx.is_rhel8_kernel("4.18.0-1", ctx.OsRelease(), "Linux version 4.18.0-1.el8.x86_64 (mockbuild@...)")


def test_version_tuple_and_version_code() -> None:
    assert ctx.version_tuple("6.12.117+deb12-amd64") == (6, 12, 117)
    assert ctx.version_tuple("6.1") == (6, 1, 0)
    assert ctx.version_tuple("garbage") == (0, 0, 0)
    assert kernel_version_code("4.18.0-553.el8_10.x86_64", "#1 SMP") == (4 << 16) + (18 << 8)
    # Debian hides the sublevel in uname -v, and the version code saturates at 255.
    assert (
        kernel_version_code("4.19.0-27-amd64", "#1 SMP Debian 4.19.316-1 (2024-06-25)") == (4 << 16) + (19 << 8) + 255
    )
    assert kernel_version_code("5.10.0-46-amd64", "#1 SMP Debian 5.10.237-1") == (5 << 16) + (10 << 8) + 237


def test_lockdown_and_small_readers(tmp_path: Path) -> None:
    assert ctx.parse_lockdown("none [integrity] confidentiality\n") == "integrity"
    assert ctx.parse_lockdown("[none] integrity confidentiality") == "none"
    assert ctx.parse_lockdown(None) == "unknown"
    assert ctx.read_lockdown(tmp_path / "lockdown").startswith("unknown (")
    assert ctx.read_int(tmp_path / "missing") is None
    (tmp_path / "value").write_text("2\n")
    assert ctx.read_int(tmp_path / "value") == 2
    (tmp_path / "bad").write_text("two\n")
    assert ctx.read_int(tmp_path / "bad") is None


def test_kernel_config_gz_plain_and_missing(tmp_path: Path) -> None:
    text = '# comment\nCONFIG_BPF_SYSCALL=y\n# CONFIG_KPROBES is not set\nCONFIG_LSM="lockdown,bpf"\n'
    (tmp_path / "config.gz").write_bytes(gzip.compress(text.encode()))
    values, source = ctx.read_kernel_config((tmp_path / "missing", tmp_path / "config.gz"))
    assert source.endswith("config.gz")
    assert values == {"CONFIG_BPF_SYSCALL": "y", "CONFIG_KPROBES": "n", "CONFIG_LSM": '"lockdown,bpf"'}
    (tmp_path / "config-6.1.0").write_text(text)
    assert ctx.read_kernel_config((tmp_path / "config-6.1.0",))[0]["CONFIG_KPROBES"] == "n"
    (tmp_path / "broken.gz").write_bytes(b"not gzip")
    values, source = ctx.read_kernel_config((tmp_path / "broken.gz", tmp_path / "nope"))
    assert values == {} and source.startswith("no kernel config found")
