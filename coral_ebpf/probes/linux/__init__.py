"""The Linux system interface the probes stand on: one libc handle, one syscall table, and one
wrapper per kernel interface (`bpf()`, `perf_event_open()`, `setns()`, `mount()`, `/proc`).

Nothing above `coral_ebpf.probes` calls libc or reads `/proc` itself; it goes through here.
"""
