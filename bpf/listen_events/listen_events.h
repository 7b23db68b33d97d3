/* The record listen_events.bpf.c sends; mirrored by coral_ebpf/probes/listen_events/layout.py,
 * which also defines the constants below (-D) and whose unit test checks every offset against
 * this header. */
#ifndef CORAL_LISTEN_EVENTS_H
#define CORAL_LISTEN_EVENTS_H

#if !defined(EVENT_LISTEN) || !defined(EVENT_CLOSE) || !defined(COMM_LEN)
#error "the listen_events constants come from coral_ebpf/probes/listen_events/layout.py"
#endif

struct listen_event {
    u64 ts_ns;
    u64 cgroup_id;
    u64 inode;   /* socket inode, as in /proc/<pid>/fd and sock_diag; 0 if unknown */
    u64 sock_id; /* kernel socket address: identity between LISTEN and CLOSE only */
    u32 kind;
    u32 pid;
    u32 tgid;
    u32 netns; /* inode of the socket's network namespace, 0 if unknown */
    u16 port;
    u16 family;
    u32 pad;
    u8 addr[16];
    char comm[COMM_LEN];
};

#endif
