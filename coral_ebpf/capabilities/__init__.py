"""capabilities: what the running kernel and this process's privileges allow, found by trying.

Import from the modules: `kernel_probe.probe(state_dir) -> ProbeReport` (loads BCC), the report
types and the component names in `report.py`, the pure verdicts in `verdicts.py`. The package
itself imports nothing, so reading a report does not load BCC. The system calls, kernel headers and
tracefs the probe relies on live in `coral_ebpf.probes`.
"""
