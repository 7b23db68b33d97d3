/* Event layouts shared by proc_events.bpf.c and listen_events.bpf.c, mirrored in
 * coral_ebpf/discovery/events.py (ctypes). Kernel structs are never read through header
 * layouts: the offsets come from the running kernel's BTF as -D defines (kernel_layout.py),
 * and when BTF is missing the fields below stay 0 and user space resolves them from /proc. */
#ifndef CORAL_DISCOVERY_EVENTS_H
#define CORAL_DISCOVERY_EVENTS_H

#define EVENT_EXEC 1
#define EVENT_EXIT 2
#define EVENT_FORK 3
#define EVENT_LISTEN 4
#define EVENT_CLOSE 5

#define COMM_LEN 16
#define FILENAME_LEN 256

#ifndef NETNS_FROM_KERNEL
#define NETNS_FROM_KERNEL 0
#endif
#ifndef INODE_FROM_KERNEL
#define INODE_FROM_KERNEL 0
#endif
#ifndef USE_RINGBUF
#define USE_RINGBUF 1
#endif
#ifndef BUFFER_PAGES
#define BUFFER_PAGES 64
#endif

struct proc_event {
    u64 ts_ns;       /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    u64 cgroup_id;
    u32 kind;
    u32 pid;         /* thread id */
    u32 tgid;        /* process id */
    u32 netns;       /* inode of the task's network namespace, 0 if unknown */
    u32 other_pid;   /* exec: the thread that called execve; fork: the child */
    u32 pad;
    char comm[COMM_LEN];
    char filename[FILENAME_LEN];
};

struct listen_event {
    u64 ts_ns;
    u64 cgroup_id;
    u64 inode;       /* socket inode, as in /proc/<pid>/fd and sock_diag; 0 if unknown */
    u64 sock_id;     /* kernel socket address: identity between LISTEN and CLOSE only */
    u32 kind;
    u32 pid;
    u32 tgid;
    u32 netns;       /* inode of the socket's network namespace, 0 if unknown */
    u16 port;
    u16 family;
    u32 pad;
    u8 addr[16];
    char comm[COMM_LEN];
};

static __always_inline u32 net_inum(const void *net)
{
    u32 inum = 0;
#if NETNS_FROM_KERNEL
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), (const char *)net + NET_INUM_OFFSET);
#endif
    return inum;
}

static __always_inline u32 current_netns(void)
{
#if NETNS_FROM_KERNEL
    const char *task = (const char *)bpf_get_current_task();
    const char *nsproxy = NULL;
    const char *net = NULL;
    bpf_probe_read_kernel(&nsproxy, sizeof(nsproxy), task + TASK_NSPROXY_OFFSET);
    if (!nsproxy)
        return 0;
    bpf_probe_read_kernel(&net, sizeof(net), nsproxy + NSPROXY_NET_OFFSET);
    return net_inum(net);
#else
    return 0;
#endif
}

static __always_inline u32 sock_netns(const void *sk)
{
#if NETNS_FROM_KERNEL
    const char *net = NULL;
    bpf_probe_read_kernel(&net, sizeof(net), (const char *)sk + SOCK_NET_OFFSET);
    return net_inum(net);
#else
    return 0;
#endif
}

static __always_inline u64 sock_inode(const void *sk)
{
    u64 ino = 0;
#if INODE_FROM_KERNEL
    const char *socket = NULL;
    bpf_probe_read_kernel(&socket, sizeof(socket), (const char *)sk + SOCK_SOCKET_OFFSET);
    if (socket)
        bpf_probe_read_kernel(&ino, sizeof(ino), socket + SOCKET_INODE_OFFSET + INODE_INO_OFFSET);
#endif
    return ino;
}

#endif
