// Capability probe: the smallest program that proves BCC can compile against the chosen
// headers and load a tracepoint program on this kernel. It is loaded, never attached.
TRACEPOINT_PROBE(sched, sched_process_exec)
{
    return 0;
}
