/* TCP sockets entering and leaving LISTEN (IPv4 and IPv6), from sock:inet_sock_set_state.
 *
 * The tracepoint fires in the context of the process calling listen() / close(), so the
 * current pid is the listener. The port comes from the tracepoint; the socket's network
 * namespace and inode are read through BTF offsets (see discovery_events.h).
 *
 * Defines: USE_RINGBUF (1: ring buffer, 0: perf buffer), BUFFER_PAGES, BTF offsets. */
#include "discovery_events.h"

#define TCP_LISTEN_STATE 10
#define TCP_CLOSE_STATE 7
#define IPPROTO_TCP_NUM 6
#define AF_INET_NUM 2
#define AF_INET6_NUM 10

BPF_PERCPU_ARRAY(lost, u64, 1);

#if USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, BUFFER_PAGES);
#else
BPF_PERF_OUTPUT(events);
BPF_PERCPU_ARRAY(scratch, struct listen_event, 1);
#endif

static __always_inline void count_lost(void)
{
    u32 zero = 0;
    u64 *value = lost.lookup(&zero);
    if (value)
        *value += 1;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP_NUM)
        return 0;
    u32 kind;
    if (args->newstate == TCP_LISTEN_STATE)
        kind = EVENT_LISTEN;
    else if (args->oldstate == TCP_LISTEN_STATE && args->newstate == TCP_CLOSE_STATE)
        kind = EVENT_CLOSE; /* LISTEN -> SYN_RECV is a connection's child socket being cloned */
    else
        return 0;

#if USE_RINGBUF
    struct listen_event *e = events.ringbuf_reserve(sizeof(struct listen_event));
#else
    u32 zero = 0;
    struct listen_event *e = scratch.lookup(&zero);
#endif
    if (!e) {
        count_lost();
        return 0;
    }
    const void *sk = args->skaddr;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    e->ts_ns = bpf_ktime_get_ns();
    e->cgroup_id = bpf_get_current_cgroup_id();
    e->inode = sock_inode(sk);
    e->sock_id = (u64)sk;
    e->kind = kind;
    e->pid = (u32)pid_tgid;
    e->tgid = pid_tgid >> 32;
    e->netns = sock_netns(sk);
    e->port = args->sport;
    e->family = args->family;
    e->pad = 0;
    __builtin_memset(e->addr, 0, sizeof(e->addr));
    if (args->family == AF_INET6_NUM)
        __builtin_memcpy(e->addr, args->saddr_v6, 16);
    else
        __builtin_memcpy(e->addr, args->saddr, 4);
    bpf_get_current_comm(&e->comm, sizeof(e->comm));

#if USE_RINGBUF
    events.ringbuf_submit(e, 0);
#else
    if (events.perf_submit(args, e, sizeof(struct listen_event)) < 0)
        count_lost();
#endif
    return 0;
}
