"""capabilities: what the running kernel and this process's privileges allow, found by trying.

Public surface: `probe(state_dir) -> ProbeReport` (kernel_probe.py) and the report types
(report.py). The system calls, kernel headers and tracefs it relies on live in `coral_ebpf.probes`.
"""

from __future__ import annotations

from coral_ebpf.capabilities.kernel_probe import probe
from coral_ebpf.capabilities.report import Feature, ProbeReport, Verdict

__all__ = ["Feature", "ProbeReport", "Verdict", "probe"]
