"""The kernel struct offsets discovery's probes need, as `-D` defines, or the reason they are missing.

Two groups, each usable alone:
- network namespace: `sock->__sk_common.skc_net.net->ns.inum` (a socket's namespace) and
  `task->nsproxy->net_ns->ns.inum` (a task's namespace);
- socket inode: `sock->sk_socket` is the `socket` inside a `socket_alloc`, whose `vfs_inode.i_ino`
  is the number `/proc/<pid>/fd` and sock_diag show.

Without BTF the probes report 0 for both and user space falls back to `/proc/<pid>/task/<tid>/ns/net`
and to matching sockets by address and port (see docs/discovery.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from coral_ebpf.discovery.btf import VMLINUX_BTF, Btf, BtfError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KernelLayout:
    sock_net: int | None = None
    net_inum: int | None = None
    task_nsproxy: int | None = None
    nsproxy_net: int | None = None
    sock_socket: int | None = None
    socket_inode: int | None = None  # offset of vfs_inode from the socket inside socket_alloc
    inode_ino: int | None = None
    problem: str = ""  # why some offsets are missing ("" when all were found)

    @property
    def netns_from_kernel(self) -> bool:
        return None not in (self.sock_net, self.net_inum, self.task_nsproxy, self.nsproxy_net)

    @property
    def inode_from_kernel(self) -> bool:
        return None not in (self.sock_socket, self.socket_inode, self.inode_ino)

    def defines(self) -> dict[str, int]:
        out = {"NETNS_FROM_KERNEL": int(self.netns_from_kernel), "INODE_FROM_KERNEL": int(self.inode_from_kernel)}
        if self.netns_from_kernel:
            out |= {
                "SOCK_NET_OFFSET": int(self.sock_net or 0),
                "NET_INUM_OFFSET": int(self.net_inum or 0),
                "TASK_NSPROXY_OFFSET": int(self.task_nsproxy or 0),
                "NSPROXY_NET_OFFSET": int(self.nsproxy_net or 0),
            }
        if self.inode_from_kernel:
            out |= {
                "SOCK_SOCKET_OFFSET": int(self.sock_socket or 0),
                "SOCKET_INODE_OFFSET": int(self.socket_inode or 0),
                "INODE_INO_OFFSET": int(self.inode_ino or 0),
            }
        return out

    def describe(self) -> str:
        parts = [
            "netns from kernel (BTF)" if self.netns_from_kernel else "netns from /proc",
            "socket inode from kernel (BTF)" if self.inode_from_kernel else "sockets matched by address",
        ]
        text = ", ".join(parts)
        return f"{text} ({self.problem})" if self.problem else text


def read_layout(btf_path: Path | None = VMLINUX_BTF) -> KernelLayout:
    """Offsets from BTF; a layout with `problem` set (and the missing group None) when BTF cannot tell."""
    if btf_path is None:
        return KernelLayout(problem="BTF use disabled")
    try:
        btf = Btf.load(btf_path)
    except BtfError as exc:
        log.warning("kernel BTF unavailable; discovery falls back to /proc", extra={"fields": {"error": str(exc)}})
        return KernelLayout(problem=str(exc))
    problems: list[str] = []
    netns: dict[str, int | None] = {"sock_net": None, "net_inum": None, "task_nsproxy": None, "nsproxy_net": None}
    inode: dict[str, int | None] = {"sock_socket": None, "socket_inode": None, "inode_ino": None}
    try:
        netns = {
            "sock_net": btf.offset_of("sock", ["__sk_common", "skc_net", "net"]),
            "net_inum": btf.offset_of("net", ["ns", "inum"]),
            "task_nsproxy": btf.offset_of("task_struct", ["nsproxy"]),
            "nsproxy_net": btf.offset_of("nsproxy", ["net_ns"]),
        }
    except BtfError as exc:
        problems.append(str(exc))
    try:
        inode = {
            "sock_socket": btf.offset_of("sock", ["sk_socket"]),
            "socket_inode": btf.offset_of("socket_alloc", ["vfs_inode"]) - btf.offset_of("socket_alloc", ["socket"]),
            "inode_ino": btf.offset_of("inode", ["i_ino"]),
        }
    except BtfError as exc:
        problems.append(str(exc))
    return KernelLayout(**netns, **inode, problem="; ".join(problems))
