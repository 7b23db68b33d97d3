"""probes: everything at the kernel boundary, shaped like BCC's libbpf-tools.

- `runtime` compiles and loads `bpf/<name>/<name>.bpf.c` with BCC (kernel headers from `headers`,
  tracefs from `linux.mount`); `verifier` reads why a program was refused.
- `channel` (+ `bpf/common/event_channel.h`) is the one event channel: a ring buffer or per-CPU
  perf buffers, with fallback and a lost count.
- `linux/` is the system interface: one libc handle and syscall table, `bpf()`, `perf_event_open`,
  `setns`, `mount`, and the `/proc` readers.
- One package per probe (`proc_events`, `listen_events`, `http_red`): `layout` (the event struct and
  the constants the C side gets as `-D` defines), `loader` and `decoder`.

Nothing here imports the parts above it (discovery, red, capabilities, agent).
"""
