"""Sets up Beyla's process, then becomes Beyla (execv). Standard library only; run as a file.

Why a wrapper and not `preexec_fn`: the agent has many threads (gRPC, aiohttp, log readers),
and Python code between fork and exec in a multi-threaded process can deadlock on a lock another
thread held at fork time. This script runs in a fresh single-threaded interpreter instead:

    python -I _exec_wrapper.py --parent PID --pdeathsig 15 [--cgroup-procs F] [--rlimit-as N]
                               [--netns] [--drop-caps] -- /usr/local/bin/beyla -config FILE

Its own exit codes, used only when it cannot exec: 126 (setup failed), 127 (exec failed). The
message on stderr starts with `coral-ebpf wrapper:` so the supervisor can tell it from Beyla's.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import resource
import sys

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CLONE_NEWNET = 0x40000000
LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _SetupError(Exception):
    pass


def _fail(message: str, code: int = 126) -> None:
    sys.stderr.write(f"coral-ebpf wrapper: {message}\n")
    sys.stderr.flush()
    os._exit(code)


def _call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        _fail(f"{what}: {os.strerror(err)}")


def _check(result: int, what: str) -> None:
    if result != 0:
        raise _SetupError(f"{what}: {os.strerror(ctypes.get_errno())}")


def _drop_capabilities() -> None:
    """Leave no capability for the exec'd program, even as uid 0 (used for the version probe)."""
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    for item in data:
        item.inheritable = 0
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
        last = int(handle.read())
    for cap in range(last + 1):
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap} from the bounding set")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")


def main(argv: list[str]) -> None:
    if "--" not in argv:
        _fail("usage: _exec_wrapper.py [options] -- PROGRAM [ARGS...]")
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1 :]
    if not command:
        _fail("no program to run")
    parent = pdeathsig = None
    cgroup_procs = None
    rlimit_as = None
    netns = drop_caps = False
    index = 0
    while index < len(options):
        name = options[index]
        if name in ("--parent", "--pdeathsig", "--cgroup-procs", "--rlimit-as"):
            if index + 1 >= len(options):
                _fail(f"{name} needs a value")
            value = options[index + 1]
            index += 2
            if name == "--parent":
                parent = int(value)
            elif name == "--pdeathsig":
                pdeathsig = int(value)
            elif name == "--cgroup-procs":
                cgroup_procs = value
            else:
                rlimit_as = int(value)
            continue
        if name == "--netns":
            netns = True
        elif name == "--drop-caps":
            drop_caps = True
        else:
            _fail(f"unknown option {name}")
        index += 1

    if pdeathsig is not None:
        _call(_libc.prctl(PR_SET_PDEATHSIG, pdeathsig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
        # The parent may have died between fork and prctl; then no signal would ever come.
        if parent is not None and os.getppid() != parent:
            _fail(f"the agent (pid {parent}) exited before Beyla started")
    if cgroup_procs is not None:
        try:
            with open(cgroup_procs, "w", encoding="ascii") as handle:
                handle.write(str(os.getpid()))
        except OSError as exc:
            _fail(f"cannot join the memory cgroup ({cgroup_procs}): {exc.strerror}")
    if rlimit_as is not None:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (rlimit_as, rlimit_as))
        except (OSError, ValueError) as exc:
            _fail(f"cannot set RLIMIT_AS to {rlimit_as}: {exc}")
    # Both are precautions for the version probe, which stops Beyla at its version line anyway:
    # where the kernel or a seccomp policy refuses them, the probe still runs.
    if netns:
        _libc.unshare(CLONE_NEWNET)
    if drop_caps:
        with contextlib.suppress(_SetupError, OSError):
            _drop_capabilities()
    try:
        os.execv(command[0], command)
    except OSError as exc:
        _fail(f"cannot execute {command[0]}: {exc.strerror}", 127)


if __name__ == "__main__":
    main(sys.argv[1:])
