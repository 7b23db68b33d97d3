"""TCP sockets entering and leaving LISTEN (`bpf/listen_events/`).

`layout` mirrors `listen_events.h` and owns its constants, `loader` compiles and attaches the
program, `decoder` turns a record into a `ListenEvent`.
"""
