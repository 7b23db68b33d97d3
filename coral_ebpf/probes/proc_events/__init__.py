"""exec, exit and fork of the processes discovery watches (`bpf/proc_events/`).

`layout` mirrors `proc_events.h` and owns its constants, `loader` compiles and attaches the
program, `decoder` turns a record into a `ProcEvent`.
"""
