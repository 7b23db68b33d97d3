/* The one event channel from a probe to user space: a ring buffer (kernel >= 5.8) or per-CPU perf
 * buffers, chosen at build time. User side: coral_ebpf/probes/channel.py, which also sets the
 * defines below (CHANNEL_RINGBUF, CHANNEL_PAGES, CHANNEL_WAKEUP).
 *
 * Before including, define CHANNEL_EVENT as the event type, e.g.
 *     #define CHANNEL_EVENT struct proc_event
 * The program then gets the map `events`, the per-CPU counter `channel_lost` (records that could
 * not be handed over) and:
 *     CHANNEL_EVENT *e = channel_reserve();   NULL (and counted lost) when there is no room
 *     ... fill e ...
 *     channel_submit(ctx, e);                 0 when handed over, else -1 (and counted lost)
 *
 * BCC rewrites map calls only in the file it compiles, so the runtime inlines this header into
 * the program's text before compiling (coral_ebpf/probes/runtime.py). */
#ifndef CORAL_EVENT_CHANNEL_H
#define CORAL_EVENT_CHANNEL_H

#ifndef CHANNEL_EVENT
#error "define CHANNEL_EVENT (the event type) before including event_channel.h"
#endif
#if !defined(CHANNEL_RINGBUF) || !defined(CHANNEL_PAGES) || !defined(CHANNEL_WAKEUP)
#error "CHANNEL_RINGBUF, CHANNEL_PAGES and CHANNEL_WAKEUP come from coral_ebpf/probes/channel.py"
#endif

BPF_PERCPU_ARRAY(channel_lost, u64, 1);

#if CHANNEL_RINGBUF
BPF_RINGBUF_OUTPUT(events, CHANNEL_PAGES);
#else
BPF_PERF_OUTPUT(events);
/* perf_submit copies the event, so it is built in per-CPU scratch memory rather than on the
 * 512-byte stack. */
BPF_PERCPU_ARRAY(channel_scratch, CHANNEL_EVENT, 1);
#endif

static __always_inline void channel_count_lost(void)
{
    u32 zero = 0;
    u64 *lost = channel_lost.lookup(&zero);
    if (lost)
        *lost += 1;
}

static __always_inline CHANNEL_EVENT *channel_reserve(void)
{
#if CHANNEL_RINGBUF
    CHANNEL_EVENT *e = events.ringbuf_reserve(sizeof(CHANNEL_EVENT));
#else
    u32 zero = 0;
    CHANNEL_EVENT *e = channel_scratch.lookup(&zero);
#endif
    if (!e)
        channel_count_lost();
    return e;
}

static __always_inline int channel_submit(void *ctx, CHANNEL_EVENT *e)
{
#if CHANNEL_RINGBUF
    /* Without wakeups the reader polls on its own schedule: no wakeup per record. */
    events.ringbuf_submit(e, CHANNEL_WAKEUP ? 0 : BPF_RB_NO_WAKEUP);
    return 0;
#else
    if (events.perf_submit(ctx, e, sizeof(CHANNEL_EVENT)) < 0) {
        channel_count_lost();
        return -1;
    }
    return 0;
#endif
}

#endif
