"""Built-in HTTP RED engine: a BCC probe on syscall tracepoints, for hosts where Beyla cannot run."""
