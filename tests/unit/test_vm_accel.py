"""The VM accelerator decision (tests/vm/accel.py and choose_accel in tests/vm/lib.sh).

Everything here runs without libvirt or a guest kernel: the override, the permission check as
another user (a real open in a child with that user's ids), the boot verdict from console text,
the check's initramfs (listed by the real cpio), and the shell glue both VM scripts call.
"""

from __future__ import annotations

import grp
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
ACCEL_PY = REPO / "tests" / "vm" / "accel.py"
LIB_SH = REPO / "tests" / "vm" / "lib.sh"


def _load_accel() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vm_accel", ACCEL_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["vm_accel"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


accel = _load_accel()
Verdict = accel.Verdict

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="checking as another user needs root")


# --- overrides ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "auto", " AUTO "])
def test_auto_or_unset_overrides_nothing(value: str | None) -> None:
    assert accel.parse_override(value, "CORAL_VM_ACCEL") is None


@pytest.mark.parametrize(
    ("value", "verdict"), [("kvm", Verdict.KVM), ("KVM", Verdict.KVM), ("tcg", Verdict.TCG), ("qemu", Verdict.TCG)]
)
def test_override_forces_the_accelerator(value: str, verdict: object) -> None:
    assert accel.parse_override(value, "CORAL_VAGRANT_DRIVER") == verdict


def test_bad_override_names_the_variable_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"CORAL_VM_ACCEL='hvf': must be one of kvm, tcg, qemu, auto"):
        accel.parse_override("hvf", "CORAL_VM_ACCEL")


def test_forced_choice_skips_the_device(tmp_path: Path) -> None:
    decision = accel.precheck("root", "qemu", "CORAL_VAGRANT_DRIVER", tmp_path / "no-kvm")
    assert decision == accel.Decision(Verdict.TCG, "forced by CORAL_VAGRANT_DRIVER=qemu")
    assert decision.line() == "tcg forced by CORAL_VAGRANT_DRIVER=qemu"


# --- who QEMU runs as, and can that user open the device ---------------------------------------


def test_libvirt_user_from_qemu_conf(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('# The user for QEMU processes\n#user = "root"\n  user = "qemu"\ngroup = "kvm"\n')
    assert accel.libvirt_qemu_user(conf) == "qemu"


def test_libvirt_user_defaults_to_debians(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('#user = "root"\n')
    assert accel.libvirt_qemu_user(conf) == "libvirt-qemu"
    assert accel.libvirt_qemu_user(tmp_path / "absent.conf") == "libvirt-qemu"


def test_libvirt_user_as_numeric_uid(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('user = "+0"\n')
    assert accel.libvirt_qemu_user(conf) == "root"


@pytest.fixture
def device() -> Iterator[Path]:
    """A stand-in for /dev/kvm in a directory every user may traverse (pytest's tmp_path is 0700)."""
    with tempfile.TemporaryDirectory(prefix="coral-accel-test-") as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)
        path = directory / "kvm"
        path.write_bytes(b"")
        yield path


@needs_root
def test_device_only_root_may_open_is_refused_to_another_user(device: Path) -> None:
    os.chown(device, 0, 0)
    device.chmod(0o600)
    error = accel.open_error(device, "nobody")
    assert error == f"nobody cannot open {device} (-rw------- root:root): Permission denied"
    decision = accel.precheck("nobody", "", "CORAL_VAGRANT_DRIVER", device)
    assert decision.verdict is Verdict.TCG
    assert decision.reason == error


@needs_root
def test_device_open_to_the_users_group_passes(device: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    os.chown(device, 0, nobody.pw_gid)
    device.chmod(0o060)  # the group only: the user's gid must be applied
    assert accel.open_error(device, "nobody") is None
    decision = accel.precheck("nobody", "auto", "CORAL_VM_ACCEL", device)
    assert decision == accel.Decision(Verdict.CHECK, f"nobody can open {device}")


@needs_root
def test_supplementary_groups_count(device: Path) -> None:
    # a group nobody is not a member of, then one it is: only the member may open
    nobody = pwd.getpwnam("nobody")
    other = next(g for g in grp.getgrall() if g.gr_gid not in os.getgrouplist("nobody", nobody.pw_gid))
    os.chown(device, 0, other.gr_gid)
    device.chmod(0o060)
    assert accel.open_error(device, "nobody") is not None


def test_own_device_opens_for_the_current_user(device: Path) -> None:
    device.chmod(0o600)
    assert accel.open_error(device, pwd.getpwuid(os.geteuid()).pw_name) is None


def test_missing_user_and_device(device: Path) -> None:
    assert accel.open_error(device, "coral-no-such-user") == "user coral-no-such-user does not exist"
    assert accel.open_error(device.parent / "absent", "root") == f"{device.parent / 'absent'} does not exist"


# --- the boot verdict --------------------------------------------------------------------------


def _run(output: str, returncode: int | None, seconds: float = 1.2, timeout: float = 30.0) -> object:
    return accel.BootRun(output, returncode, seconds, timeout)


def test_marker_line_means_kvm() -> None:
    console = (
        "[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)\n"
        "[    0.000000] Command line: console=ttyS0 panic=-1 rdinit=/init\n"
        "[    0.912000] Run /init as init process\r\n"
        "CORAL-ACCEL-CHECK up 6.1.0-56-amd64\r\n"
        "[    0.950000] reboot: Power down\n"
    )
    decision = accel.judge_boot(_run(console, 0, seconds=1.4))
    assert decision.verdict is Verdict.KVM
    assert decision.reason == "a Linux guest (6.1.0-56-amd64) booted to its init under KVM in 1.4 s"


def test_silent_console_at_the_time_bound_means_tcg() -> None:
    decision = accel.judge_boot(_run("", None, seconds=30.0))
    assert decision == accel.Decision(
        Verdict.TCG, "a Linux guest printed nothing on its serial console in 30 s under KVM"
    )


def test_stuck_boot_names_the_last_console_line() -> None:
    console = "[    0.000000] Linux version 6.1.0-56-amd64\n[    0.120000] smpboot: CPU0: AMD EPYC\n"
    decision = accel.judge_boot(_run(console, None, seconds=30.0))
    assert decision.verdict is Verdict.TCG
    assert decision.reason == (
        "a Linux guest did not reach its init in 30 s under KVM"
        " (2 console lines, last: [    0.120000] smpboot: CPU0: AMD EPYC)"
    )


def test_qemu_error_is_quoted() -> None:
    console = "qemu-system-x86_64: -accel kvm: Could not access KVM kernel module: Permission denied\n"
    decision = accel.judge_boot(_run(console, 1, seconds=0.1))
    assert decision == accel.Decision(
        Verdict.TCG,
        "QEMU could not run a KVM guest: qemu-system-x86_64: -accel kvm: Could not access KVM kernel module: "
        "Permission denied",
    )


def test_panic_is_quoted() -> None:
    console = "[    1.0] Kernel panic - not syncing: No working init found.\n"
    decision = accel.judge_boot(_run(console, 0))
    assert decision.verdict is Verdict.TCG
    assert (
        decision.reason
        == "the KVM guest's kernel panicked: [    1.0] Kernel panic - not syncing: No working init found."
    )


def test_marker_must_start_the_line() -> None:
    console = "[    0.0] Kernel command line: console=ttyS0 CORAL-ACCEL-CHECK up 6.1\n"
    decision = accel.judge_boot(_run(console, 0))
    assert decision.verdict is Verdict.TCG
    assert "without its init's line" in decision.reason


# --- the check's initramfs ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio (apt-get install cpio)")
def test_initramfs_is_a_newc_archive_the_real_cpio_reads(tmp_path: Path) -> None:
    archive = accel.check_initramfs(b"\x7fELF busybox stand-in")
    assert len(archive) % 512 == 0
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    entries = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing.splitlines()}
    assert set(entries) == {"bin", "bin/busybox", "bin/sh", "dev", "dev/console", "proc", "init"}
    assert entries["init"].startswith("-rwxr-xr-x")
    assert entries["bin/sh"].startswith("lrwxrwxrwx") and entries["bin/sh"].endswith("-> busybox")
    assert entries["dev/console"].startswith("crw-------") and "5,   1" in entries["dev/console"]
    # extract the regular files and read them back
    subprocess.run(["cpio", "-id", "--quiet", "init", "bin/busybox"], input=archive, cwd=tmp_path, check=True)
    assert (tmp_path / "bin" / "busybox").read_bytes() == b"\x7fELF busybox stand-in"
    init = (tmp_path / "init").read_text()
    assert init.startswith("#!/bin/sh\n")
    assert 'echo "CORAL-ACCEL-CHECK up $(/bin/busybox uname -r)"' in init
    assert "poweroff -f" in init


def test_boot_check_without_kernel_says_so(tmp_path: Path) -> None:
    decision = accel.boot_check(tmp_path / "vmlinuz", "root", 5.0)
    assert decision == accel.Decision(
        Verdict.TCG, f"no kernel to boot for the KVM check ({tmp_path / 'vmlinuz'} is missing)"
    )


# --- the command line and the shell glue -------------------------------------------------------


def test_cli_bad_override_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert accel.main(["precheck", "--user", "root", "--override", "kvm2", "--override-name", "CORAL_VM_ACCEL"]) == 2
    assert capsys.readouterr().err == "accel.py: CORAL_VM_ACCEL='kvm2': must be one of kvm, tcg, qemu, auto\n"


def _choose(env: dict[str, str], kernel_fn: str = "false") -> subprocess.CompletedProcess[str]:
    script = f'source "{LIB_SH}"; LOG_TAG=t; choose_accel CORAL_VM_ACCEL root {kernel_fn}; echo "$ACCEL|$ACCEL_REASON"'
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env={**os.environ, **env}, check=False, timeout=60
    )


def test_shell_glue_forced_tcg_logs_the_reason() -> None:
    result = _choose({"CORAL_VM_ACCEL": "tcg"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "tcg|forced by CORAL_VM_ACCEL=tcg\n"
    assert "t] accelerator: tcg (forced by CORAL_VM_ACCEL=tcg)" in result.stderr


def test_shell_glue_rejects_a_bad_override() -> None:
    result = _choose({"CORAL_VM_ACCEL": "fast"})
    assert result.returncode == 1
    assert "CORAL_VM_ACCEL='fast': must be one of kvm, tcg, qemu, auto" in result.stderr
    assert "error: cannot choose the VM accelerator" in result.stderr


@pytest.mark.skipif(
    accel.open_error(accel.KVM_DEVICE, "root") is not None, reason="root cannot open /dev/kvm on this host"
)
def test_shell_glue_without_a_kernel_to_boot_falls_back_to_tcg() -> None:
    result = _choose({"CORAL_VM_ACCEL": "auto"}, kernel_fn="false")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "tcg|no kernel could be built for the KVM boot check\n"


# --- the per-kernel table shows the accelerator ------------------------------------------------


def test_report_table_has_an_accel_column(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("vm_report", REPO / "tests" / "vm" / "report.py")
    assert spec is not None and spec.loader is not None
    report = importlib.util.module_from_spec(spec)
    sys.modules["vm_report"] = report
    spec.loader.exec_module(report)
    junit = '<testsuites><testsuite tests="3" failures="0" errors="0" skipped="1" time="4.5"/></testsuites>'
    for leg, kernel, accel_name in (("host", "6.18.44-fc", "native"), ("6.1", "6.1.0-57-amd64", "tcg")):
        (tmp_path / leg).mkdir()
        (tmp_path / leg / "kernel").write_text(kernel + "\n")
        (tmp_path / leg / "accel").write_text(accel_name + "\n")
        (tmp_path / leg / "rc").write_text("0\n")
        (tmp_path / leg / "junit.xml").write_text(junit)
    (tmp_path / "5.10").mkdir()  # a leg that left nothing
    lines = report.render([report.load_leg(tmp_path, leg) for leg in ("host", "6.1", "5.10")]).splitlines()
    assert lines[0].split() == [
        "leg",
        "kernel",
        "accel",
        "result",
        "passed",
        "failed",
        "skipped",
        "pytest",
        "wall",
        "vm",
        "cpu",
    ]
    assert lines[2].split()[:4] == ["host", "6.18.44-fc", "native", "ok"]
    assert lines[3].split()[:4] == ["6.1", "6.1.0-57-amd64", "tcg", "ok"]
    assert lines[4].split()[:4] == ["5.10", "5.10", "-", "NO"]
