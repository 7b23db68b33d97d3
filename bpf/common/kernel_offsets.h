/* Network namespace and socket inode of a task or socket, for proc_events and listen_events.
 * Kernel structs are never read through header layouts: the offsets come from the running
 * kernel's BTF as -D defines (coral_ebpf/discovery/kernel_layout.py), and when BTF is missing
 * these helpers return 0 and user space resolves the values from /proc. */
#ifndef CORAL_KERNEL_OFFSETS_H
#define CORAL_KERNEL_OFFSETS_H

#ifndef NETNS_FROM_KERNEL
#define NETNS_FROM_KERNEL 0
#endif
#ifndef INODE_FROM_KERNEL
#define INODE_FROM_KERNEL 0
#endif

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
