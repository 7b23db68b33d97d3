"""HTTP/1.x requests and responses of chosen processes, from syscall tracepoints (`bpf/http_red/`).

`layout` mirrors `http_red.h` and owns the constants both sides use, `loader` compiles the
program, wires its tail calls and keeps its target maps, `decoder` turns an event into a
`RedEvent` (and back, for stand-in probes).
"""
