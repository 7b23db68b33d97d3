/* TCP sockets entering and leaving LISTEN (IPv4 and IPv6), from sock:inet_sock_set_state.
 *
 * The tracepoint fires in the context of the process calling listen() / close(), so the
 * current pid is the listener. The port comes from the tracepoint; the socket's network
 * namespace and inode are read through BTF offsets (see common/kernel_offsets.h).
 *
 * Defines (coral_ebpf/probes/listen_events/loader.py): the event channel's
 * (common/event_channel.h), the layout constants (listen_events.h), the BTF offsets. */
#include "listen_events/listen_events.h"
#include "common/kernel_offsets.h"

#define CHANNEL_EVENT struct listen_event
#include "common/event_channel.h"

#define TCP_LISTEN_STATE 10
#define TCP_CLOSE_STATE  7
#define IPPROTO_TCP_NUM  6
#define AF_INET_NUM      2
#define AF_INET6_NUM     10

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

    struct listen_event *e = channel_reserve();
    if (!e)
        return 0;
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

    channel_submit(args, e);
    return 0;
}
