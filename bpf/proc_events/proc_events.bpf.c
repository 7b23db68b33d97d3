/* Process exec / exit / fork for service discovery (tracepoints only: no kprobes needed).
 *
 * Only processes user space asked for (the `watched` map: the pids that hold listeners) are
 * reported, so a host running thousands of short commands costs one hash lookup per event
 * here and nothing in user space. settings[0] = 1 reports every process (`discover --all`).
 *
 * Defines (coral_ebpf/probes/proc_events/loader.py): the event channel's (common/event_channel.h),
 * the layout constants (proc_events.h), HAVE_GROUP_DEAD (the exit tracepoint has `group_dead`,
 * kernel >= 6.16), and the BTF offsets of common/kernel_offsets.h. */
#include "proc_events/proc_events.h"
#include "common/kernel_offsets.h"

#define CHANNEL_EVENT struct proc_event
#include "common/event_channel.h"

#ifndef HAVE_GROUP_DEAD
#define HAVE_GROUP_DEAD 0
#endif
#define CLONE_THREAD_FLAG 0x00010000ULL

BPF_HASH(watched, u32, u8, 65536);
BPF_ARRAY(settings, u32, 1);

static __always_inline int wanted(u32 tgid)
{
    u32 zero = 0;
    u32 *all = settings.lookup(&zero);
    if (all && *all)
        return 1;
    return watched.lookup(&tgid) != NULL;
}

static __always_inline void fill(struct proc_event *e, u32 kind)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    e->ts_ns = bpf_ktime_get_ns();
    e->cgroup_id = bpf_get_current_cgroup_id();
    e->kind = kind;
    e->pid = (u32)pid_tgid;
    e->tgid = pid_tgid >> 32;
    e->netns = current_netns();
    e->other_pid = 0;
    e->pad = 0;
    e->filename[0] = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!wanted(tgid))
        return 0;
    struct proc_event *e = channel_reserve();
    if (!e)
        return 0;
    fill(e, EVENT_EXEC);
    e->other_pid = args->old_pid;
    TP_DATA_LOC_READ_STR(e->filename, filename, sizeof(e->filename));
    channel_submit(args, e);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
#if HAVE_GROUP_DEAD
    if (!args->group_dead)
        return 0;
#else
    /* Older kernels: the leader's exit stands for the process (threads can outlive it briefly). */
    if ((u32)pid_tgid != tgid)
        return 0;
#endif
    if (!wanted(tgid))
        return 0;
    struct proc_event *e = channel_reserve();
    if (!e)
        return 0;
    fill(e, EVENT_EXIT);
    channel_submit(args, e);
    return 0;
}

/* task_newtask rather than sched_process_fork: it carries clone_flags, so threads are skipped here. */
TRACEPOINT_PROBE(task, task_newtask)
{
    if (args->clone_flags & CLONE_THREAD_FLAG)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!wanted(tgid))
        return 0;
    struct proc_event *e = channel_reserve();
    if (!e)
        return 0;
    fill(e, EVENT_FORK);
    e->other_pid = args->pid;
    channel_submit(args, e);
    return 0;
}
