/* Process exec / exit / fork for service discovery (tracepoints only: no kprobes needed).
 *
 * Only processes user space asked for (the `watched` map: the pids that hold listeners) are
 * reported, so a host running thousands of short commands costs one hash lookup per event
 * here and nothing in user space. settings[0] = 1 reports every process (`discover --all`).
 *
 * Defines: USE_RINGBUF (1: ring buffer, 0: perf buffer), BUFFER_PAGES, HAVE_GROUP_DEAD (the
 * exit tracepoint has `group_dead`, kernel >= 6.16), plus the BTF offsets of discovery_events.h. */
#include "discovery_events.h"

#ifndef HAVE_GROUP_DEAD
#define HAVE_GROUP_DEAD 0
#endif
#define CLONE_THREAD_FLAG 0x00010000ULL

BPF_HASH(watched, u32, u8, 65536);
BPF_ARRAY(settings, u32, 1);
BPF_PERCPU_ARRAY(lost, u64, 1);

#if USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, BUFFER_PAGES);
#else
BPF_PERF_OUTPUT(events);
BPF_PERCPU_ARRAY(scratch, struct proc_event, 1);
#endif

static __always_inline int wanted(u32 tgid)
{
    u32 zero = 0;
    u32 *all = settings.lookup(&zero);
    if (all && *all)
        return 1;
    return watched.lookup(&tgid) != NULL;
}

static __always_inline void count_lost(void)
{
    u32 zero = 0;
    u64 *value = lost.lookup(&zero);
    if (value)
        *value += 1;
}

static __always_inline struct proc_event *reserve(void)
{
#if USE_RINGBUF
    struct proc_event *e = events.ringbuf_reserve(sizeof(struct proc_event));
#else
    u32 zero = 0;
    struct proc_event *e = scratch.lookup(&zero);
#endif
    if (!e)
        count_lost();
    return e;
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

static __always_inline void submit(void *ctx, struct proc_event *e)
{
#if USE_RINGBUF
    events.ringbuf_submit(e, 0);
#else
    if (events.perf_submit(ctx, e, sizeof(struct proc_event)) < 0)
        count_lost();
#endif
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!wanted(tgid))
        return 0;
    struct proc_event *e = reserve();
    if (!e)
        return 0;
    fill(e, EVENT_EXEC);
    e->other_pid = args->old_pid;
    TP_DATA_LOC_READ_STR(e->filename, filename, sizeof(e->filename));
    submit(args, e);
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
    struct proc_event *e = reserve();
    if (!e)
        return 0;
    fill(e, EVENT_EXIT);
    submit(args, e);
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
    struct proc_event *e = reserve();
    if (!e)
        return 0;
    fill(e, EVENT_FORK);
    e->other_pid = args->pid;
    submit(args, e);
    return 0;
}
