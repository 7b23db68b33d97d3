"""Choose the accelerator of the test VMs: KVM only where a Linux guest really runs under it.

usage: python3 accel.py precheck --user USER [--override VALUE --override-name NAME] [--device /dev/kvm]
       python3 accel.py boot --user USER --kernel VMLINUZ [--timeout SECONDS] [--busybox PATH]

Both print one line, `<verdict> <reason>`, where the verdict is
  kvm    use KVM,
  tcg    use QEMU's TCG (the reason says why not KVM),
  check  (precheck only) USER can open the KVM device: boot a kernel with `boot` to decide.
The reason is a sentence for the log. Exit status 2 with a message on stderr for bad arguments
(e.g. an override that is not kvm, tcg, qemu or auto).

Why a boot and not just "/dev/kvm opens": on some hosts (nested or paravirtualised KVM, such as
kvm-pvm) the device opens and a boot sector runs, but a Linux guest prints nothing and hangs.
`boot` starts a real kernel under `-accel kvm`, as USER (the user the VMs will run as), with an
initramfs whose init prints one line and powers off, and gives it a time bound.
`make vm-test` (tests/vm/run-matrix.sh, QEMU as root) and `make vagrant-test` (vagrant/test.sh,
QEMU as libvirt's QEMU user) both decide through this module.
"""

from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

KVM_DEVICE = Path("/dev/kvm")
LIBVIRT_QEMU_CONF = Path("/etc/libvirt/qemu.conf")
# What Debian's libvirt runs QEMU as when qemu.conf does not say otherwise.
LIBVIRT_DEFAULT_QEMU_USER = "libvirt-qemu"
BUSYBOX = Path("/bin/busybox")
QEMU = "qemu-system-x86_64"
# A working KVM reaches init in 1-3 s; TCG takes 4-8 s on this kind of host. 30 s leaves room
# for a loaded machine and still bounds the cost on hosts where KVM guests hang.
DEFAULT_BOOT_TIMEOUT = 30.0
# The line the check's init prints. It never appears on the kernel command line, so the
# kernel's own "Command line:" echo cannot fake it.
MARKER = "CORAL-ACCEL-CHECK"
OVERRIDE_VALUES = ("kvm", "tcg", "qemu", "auto")


class Verdict(StrEnum):
    KVM = "kvm"
    TCG = "tcg"
    CHECK = "check"  # the cheap checks passed; only a boot can tell


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str

    def line(self) -> str:
        return f"{self.verdict} {self.reason}"


def parse_override(value: str | None, name: str) -> Verdict | None:
    """The accelerator an environment variable forces, None for auto/unset.

    `qemu` is libvirt's name for TCG (CORAL_VAGRANT_DRIVER's values), `tcg` QEMU's: both mean TCG.
    """
    text = (value or "").strip().lower()
    if text in ("", "auto"):
        return None
    if text == "kvm":
        return Verdict.KVM
    if text in ("tcg", "qemu"):
        return Verdict.TCG
    raise ValueError(f"{name}={value!r}: must be one of {', '.join(OVERRIDE_VALUES)}")


def libvirt_qemu_user(conf: Path = LIBVIRT_QEMU_CONF) -> str:
    """The user libvirt's system daemon runs QEMU as: qemu.conf's `user`, else Debian's default."""
    try:
        text = conf.read_text()
    except OSError:
        return LIBVIRT_DEFAULT_QEMU_USER
    match = re.search(r'^\s*user\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        return LIBVIRT_DEFAULT_QEMU_USER
    user = match.group(1)
    if user.startswith("+") and user[1:].isdigit():  # "+N": a numeric uid
        try:
            return pwd.getpwuid(int(user[1:])).pw_name
        except KeyError:
            return user
    return user


def _describe(device: Path) -> str:
    """`crw------- root:root`, the facts a reader needs to fix a permission problem."""
    try:
        st = device.stat()
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{stat.filemode(st.st_mode)} {owner}:{group}"


def open_error(device: Path, user: str) -> str | None:
    """None when `user` can open `device` read-write, else why not (one line).

    The open really happens (`sh`'s `<>` is open(O_RDWR), as QEMU opens /dev/kvm), in a child
    with the user's uid, gid and supplementary groups, as libvirt starts QEMU: so ACLs and
    security modules count too.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return f"user {user} does not exist"
    if not device.exists():
        return f"{device} does not exist"
    same_user = entry.pw_uid == os.geteuid()
    if not same_user and os.geteuid() != 0:
        return f"cannot check {device} as {user} without root"
    ids = _as_user(entry)
    try:
        result = subprocess.run(
            ["/bin/sh", "-c", 'exec 3<>"$1"', "sh", str(device)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd="/",
            user=ids.user,
            group=ids.group,
            extra_groups=ids.extra_groups,
        )
    except OSError as exc:
        return f"cannot check {device} as {user}: {exc}"
    if result.returncode == 0:
        return None
    # dash: "sh: 1: cannot open /dev/kvm: Permission denied"
    lines = result.stderr.strip().splitlines()
    why = lines[-1].rsplit(": ", 1)[-1] if lines else f"exit status {result.returncode}"
    return f"{user} cannot open {device} ({_describe(device)}): {why}"


@dataclass(frozen=True)
class RunAs:
    """subprocess's user/group/extra_groups for a child running as a user (all None: as we are)."""

    user: int | None = None
    group: int | None = None
    extra_groups: list[int] | None = None


def _as_user(entry: pwd.struct_passwd) -> RunAs:
    if entry.pw_uid == os.geteuid():
        return RunAs()
    return RunAs(entry.pw_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid))


def precheck(user: str, override: str | None, override_name: str, device: Path = KVM_DEVICE) -> Decision:
    """What can be decided without booting: an override, or a user who cannot open the device."""
    forced = parse_override(override, override_name)
    if forced is not None:
        return Decision(forced, f"forced by {override_name}={override}")
    error = open_error(device, user)
    if error is not None:
        return Decision(Verdict.TCG, error)
    return Decision(Verdict.CHECK, f"{user} can open {device}")


# --- the boot check -----------------------------------------------------------------------------


def _newc_entry(ino: int, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> bytes:
    """One entry of a cpio archive in the `newc` format the kernel unpacks.

    (Linux: Documentation/driver-api/early-userspace/buffer-format.rst.)
    """
    nlink = 2 if stat.S_ISDIR(mode) else 1
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    head = b"070701" + "".join(f"{field:08X}" for field in fields).encode() + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


CHECK_INIT = f"""#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo "{MARKER} up $(/bin/busybox uname -r)"
/bin/busybox poweroff -f
"""


def check_initramfs(busybox: bytes) -> bytes:
    """An initramfs whose init prints the marker line with `uname -r` and powers off."""
    entries = [
        ("bin", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("bin/busybox", stat.S_IFREG | 0o755, busybox, (0, 0)),
        ("bin/sh", stat.S_IFLNK | 0o777, b"busybox", (0, 0)),
        ("dev", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ("proc", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("init", stat.S_IFREG | 0o755, CHECK_INIT.encode(), (0, 0)),
    ]
    archive = b"".join(_newc_entry(ino, *entry) for ino, entry in enumerate(entries, start=1))
    archive += _newc_entry(0, "TRAILER!!!", 0)
    return archive + b"\0" * (-len(archive) % 512)


@dataclass(frozen=True)
class BootRun:
    """What one boot under `-accel kvm` left: its console (and QEMU's messages) and how it ended."""

    output: str
    returncode: int | None  # None: killed at the time bound
    seconds: float
    timeout: float


def judge_boot(run: BootRun) -> Decision:
    """KVM only when the guest's init printed the marker; otherwise TCG and the most telling line."""
    lines = [line.strip() for line in run.output.replace("\r", "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith(MARKER + " up"):
            kernel = line.split(" up", 1)[1].strip() or "?"
            return Decision(
                Verdict.KVM, f"a Linux guest ({kernel}) booted to its init under KVM in {run.seconds:.1f} s"
            )
    qemu_errors = [line for line in lines if line.startswith(QEMU)]
    if qemu_errors:
        return Decision(Verdict.TCG, f"QEMU could not run a KVM guest: {qemu_errors[0]}")
    panic = next((line for line in lines if "Kernel panic" in line), None)
    if panic:
        return Decision(Verdict.TCG, f"the KVM guest's kernel panicked: {panic}")
    if run.returncode is None:
        if not lines:
            return Decision(
                Verdict.TCG, f"a Linux guest printed nothing on its serial console in {run.timeout:.0f} s under KVM"
            )
        return Decision(
            Verdict.TCG,
            f"a Linux guest did not reach its init in {run.timeout:.0f} s under KVM"
            f" ({len(lines)} console lines, last: {lines[-1][:120]})",
        )
    return Decision(
        Verdict.TCG,
        f"the KVM guest ended (QEMU exit status {run.returncode}) without its init's line"
        + (f"; last console line: {lines[-1][:120]}" if lines else ", printing nothing"),
    )


def boot_kernel(kernel: Path, user: str, timeout: float, busybox: Path = BUSYBOX, accel: str = "kvm") -> BootRun:
    """Boot `kernel` with the check initramfs under `-accel kvm`, as `user`, within `timeout` s.

    (`accel` exists so the check itself can be tried under TCG, where it must pass everywhere.)
    """
    entry = pwd.getpwnam(user)
    with tempfile.TemporaryDirectory(prefix="coral-accel-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # QEMU may run as another user: it reads the kernel and initramfs here
        vmlinuz = work / "vmlinuz"
        shutil.copyfile(kernel, vmlinuz)
        initrd = work / "initrd.cpio"
        initrd.write_bytes(check_initramfs(busybox.read_bytes()))
        for path in (vmlinuz, initrd):
            path.chmod(0o644)
        args = [
            QEMU, "-accel", accel, "-machine", "q35", "-cpu", "max", "-smp", "1", "-m", "256",
            "-display", "none", "-nodefaults", "-no-reboot", "-serial", "stdio",
            "-kernel", str(vmlinuz), "-initrd", str(initrd),
            "-append", "console=ttyS0 panic=-1 rdinit=/init",
        ]  # fmt: skip
        ids = _as_user(entry)
        start = time.monotonic()
        try:
            result = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
                cwd="/",
                user=ids.user,
                group=ids.group,
                extra_groups=ids.extra_groups,
            )
        except subprocess.TimeoutExpired as expired:  # subprocess.run has killed QEMU
            raw = expired.output or b""
            return BootRun(_text(raw), None, time.monotonic() - start, timeout)
        return BootRun(_text(result.stdout), result.returncode, time.monotonic() - start, timeout)


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")


def boot_check(kernel: Path, user: str, timeout: float, busybox: Path = BUSYBOX) -> Decision:
    if not kernel.is_file():
        return Decision(Verdict.TCG, f"no kernel to boot for the KVM check ({kernel} is missing)")
    if not busybox.is_file():
        return Decision(Verdict.TCG, f"no {busybox} for the KVM check's initramfs (apt-get install busybox-static)")
    if shutil.which(QEMU) is None:
        return Decision(Verdict.TCG, f"{QEMU} is not installed")
    try:
        pwd.getpwnam(user)
    except KeyError:
        return Decision(Verdict.TCG, f"user {user} does not exist")
    return judge_boot(boot_kernel(kernel, user, timeout, busybox))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="accel.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pre = commands.add_parser("precheck", help="override, then: can USER open the KVM device?")
    pre.add_argument("--user", required=True)
    pre.add_argument("--override", default="")
    pre.add_argument("--override-name", default="override")
    pre.add_argument("--device", type=Path, default=KVM_DEVICE)
    boot = commands.add_parser("boot", help="boot a kernel under KVM as USER with a time bound")
    boot.add_argument("--user", required=True)
    boot.add_argument("--kernel", type=Path, required=True)
    boot.add_argument("--timeout", type=float, default=DEFAULT_BOOT_TIMEOUT)
    boot.add_argument("--busybox", type=Path, default=BUSYBOX)
    commands.add_parser("libvirt-user", help="print the user libvirt runs QEMU as")
    args = parser.parse_args(argv)
    try:
        if args.command == "libvirt-user":
            print(libvirt_qemu_user())
            return 0
        if args.command == "precheck":
            decision = precheck(args.user, args.override, args.override_name, args.device)
        else:
            decision = boot_check(args.kernel, args.user, args.timeout, args.busybox)
    except ValueError as exc:
        print(f"accel.py: {exc}", file=sys.stderr)
        return 2
    print(decision.line())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
