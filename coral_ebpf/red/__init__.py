"""Built-in HTTP RED engine: a BCC probe on syscall tracepoints, for hosts where Beyla cannot run."""

# The config package assembles every part's settings (including red.settings); importing it
# first lets `coral_ebpf.red.*` be imported on its own without a circular import.
import coral_ebpf.config  # noqa: F401
