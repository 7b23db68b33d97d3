"""Grafana Beyla: binary lookup and install, config rendering, and the supervisor.

`coral_ebpf.config` is imported first on purpose: it assembles every part's settings module,
and importing `coral_ebpf.beyla.settings` before it would enter that cycle half-way.
"""

import coral_ebpf.config  # noqa: F401  (import order, see above)
