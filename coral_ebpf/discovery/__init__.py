"""Live service discovery: BCC tracepoint probes, a netlink snapshot, and the service registry.

Public surface: `Discovery` (component.py), `ServiceRegistry` (registry.py), the model types.
"""
