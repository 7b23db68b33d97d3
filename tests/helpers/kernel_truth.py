"""What the running kernel has, learned independently of coral_ebpf: its build config and bpftool.

Integration tests compare the capability probe's answers with these, so the same tests hold on
this machine (no kprobes) and on Debian's kernels in VMs (kprobes), without per-host constants.
The config comes from /boot/config-$(uname -r), else /proc/config.gz; either may be missing in a
guest, and then `kernel_config()` says why and the tests that need it skip with that reason.
"""

from __future__ import annotations

import gzip
import json
import platform
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class KernelConfig:
    values: dict[str, str]
    source: str

    def enabled(self, option: str) -> bool:
        return self.values.get(option) in ("y", "m")


@cache
def kernel_config() -> KernelConfig | str:
    """The running kernel's config, or a string saying why none could be read."""
    release = platform.release()
    candidates = (Path(f"/boot/config-{release}"), Path("/proc/config.gz"))
    for path in candidates:
        try:
            raw = path.read_bytes()
        except OSError:
            continue
        text = gzip.decompress(raw).decode() if path.suffix == ".gz" else raw.decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("CONFIG_"):
                key, _, value = line.partition("=")
                values[key] = value
        return KernelConfig(values, str(path))
    return f"no kernel config: neither {candidates[0]} nor {candidates[1]} exists"


@cache
def bpftool_features() -> dict[str, Any] | str:
    """`bpftool -j feature probe kernel`, or why it is unavailable."""
    binary = shutil.which("bpftool") or next(
        (p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if Path(p).exists()), None
    )
    if binary is None:
        return "bpftool is not installed"
    result = subprocess.run([binary, "-j", "feature", "probe", "kernel"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"bpftool feature probe failed: {result.stderr.strip()[:200]}"
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def kernel_numbers() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def beyla_application_possible() -> bool | str:
    """Whether Beyla's application mode can run on this kernel by its build config (kprobes for the
    process watcher, BTF, kernel >= 5.8), or a string saying why that cannot be told."""
    config = kernel_config()
    if isinstance(config, str):
        return f"cannot tell whether Beyla can run on this kernel: {config}"
    return config.enabled("CONFIG_KPROBES") and config.enabled("CONFIG_DEBUG_INFO_BTF") and kernel_numbers() >= (5, 8)
