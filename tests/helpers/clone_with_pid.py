"""Start a program with a chosen pid (clone3 with set_tid, Linux >= 5.5, needs CAP_SYS_ADMIN).

Usage: python3 clone_with_pid.py PID PROGRAM [ARGS...]. Prints the child's pid, then waits for it.
Lets a test reuse the pid of a process that just exited without touching kernel.ns_last_pid.
Run it as its own single-threaded process: after a raw clone the child may only exec.
"""

from __future__ import annotations

import ctypes
import os
import sys

SYS_CLONE3 = {"x86_64": 435, "aarch64": 435}
SIGCHLD = 17


class CloneArgs(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
            "stack_size", "tls", "set_tid", "set_tid_size", "cgroup",
        )
    ]


def main() -> int:
    wanted, argv = int(sys.argv[1]), sys.argv[2:]
    # PyDLL keeps the GIL held across the call, so the child starts with a usable interpreter.
    libc = ctypes.PyDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    tids = (ctypes.c_int32 * 1)(wanted)
    args = CloneArgs(exit_signal=SIGCHLD, set_tid=ctypes.addressof(tids), set_tid_size=1)
    number = SYS_CLONE3[os.uname().machine]
    child = libc.syscall(ctypes.c_long(number), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if child == 0:
        os.execv(argv[0], argv)
    if child < 0:
        err = ctypes.get_errno()
        sys.stderr.write(f"clone3(set_tid={wanted}): {os.strerror(err)}\n")
        return 1
    sys.stdout.write(f"{child}\n")
    sys.stdout.flush()
    _pid, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    raise SystemExit(main())
