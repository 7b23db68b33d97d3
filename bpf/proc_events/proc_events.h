/* The record proc_events.bpf.c sends; mirrored by coral_ebpf/probes/proc_events/layout.py, which
 * also defines the constants below (-D) and whose unit test checks every offset against this
 * header. */
#ifndef CORAL_PROC_EVENTS_H
#define CORAL_PROC_EVENTS_H

#if !defined(EVENT_EXEC) || !defined(EVENT_EXIT) || !defined(EVENT_FORK) || !defined(COMM_LEN) || !defined(FILENAME_LEN)
#error "the proc_events constants come from coral_ebpf/probes/proc_events/layout.py"
#endif

struct proc_event {
    u64 ts_ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    u64 cgroup_id;
    u32 kind;
    u32 pid;       /* thread id */
    u32 tgid;      /* process id */
    u32 netns;     /* inode of the task's network namespace, 0 if unknown */
    u32 other_pid; /* exec: the thread that called execve; fork: the child */
    u32 pad;
    char comm[COMM_LEN];
    char filename[FILENAME_LEN];
};

#endif
