"""capabilities: what the running kernel and this process's privileges allow, found by trying.

Public surface: `probe(state_dir) -> ProbeReport` (kernel_probe.py), the report types (report.py),
the kernel headers resolver (headers.py) and tracefs mounting (mounts.py).

`probe` is imported lazily: bcc_runtime imports `capabilities.headers`, and the probe imports
bcc_runtime, so an eager import here would be circular.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coral_ebpf.capabilities.report import Feature, ProbeReport, Verdict

if TYPE_CHECKING:
    from coral_ebpf.capabilities.kernel_probe import probe

__all__ = ["Feature", "ProbeReport", "Verdict", "probe"]


def __getattr__(name: str) -> Any:
    if name == "probe":
        from coral_ebpf.capabilities.kernel_probe import probe

        return probe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
