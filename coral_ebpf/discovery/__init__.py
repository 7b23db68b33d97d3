"""Live service discovery: BCC tracepoint probes, a netlink snapshot, and the service registry.

Public surface: `Discovery` (component.py), `ServiceRegistry` (registry.py), the model types.
"""

# The config package imports every part's settings module; importing it first keeps
# `import coral_ebpf.discovery.settings` from entering that cycle half-way.
import coral_ebpf.config  # noqa: F401
