/* http_red's shared layout: the event it sends, the connection key user space reads, and the
 * constants both sides use. Mirrored by coral_ebpf/probes/http_red/layout.py, which defines every
 * constant below (-D) and whose unit test checks each field's offset against this header. */
#ifndef CORAL_HTTP_RED_H
#define CORAL_HTTP_RED_H

/* Settings (coral_ebpf/probes/http_red/loader.py) */
#if !defined(RED_MAX_CONNS) || !defined(RED_PATH_MAX) || !defined(RED_DEPTH) || !defined(RED_INFER_CONNS)
#error "RED_MAX_CONNS, RED_PATH_MAX, RED_DEPTH and RED_INFER_CONNS come from the loader"
#endif
/* Constants (coral_ebpf/probes/http_red/layout.py): event flags RED_F_*, counters C_*, tail-call
 * slots TAIL_*, methods M_*, and RED_FILTER_SLOTS. */
#if !defined(RED_F_CLOSED) || !defined(C_COUNT) || !defined(TAIL_COUNT) || !defined(M_TRACE) ||                        \
    !defined(RED_FILTER_SLOTS)
#error "the http_red constants come from coral_ebpf/probes/http_red/layout.py"
#endif

struct conn_key {
    u32 tgid;
    s32 fd;
};

/*
 * The record sent per completed request. From `tgid` to the end of the target (path[path_len])
 * the event holds exactly what decides a request's attributes, so user space uses those bytes
 * as its cache key without decoding them.
 */
struct red_event {
    u64 start_ns;
    u64 end_ns;
    u64 conn_id;
    u32 pid;
    s32 fd;
    u16 peer_port;
    u16 _pad;
    u32 tgid; /* the attribute bytes start here */
    s32 listen_fd;
    s32 inferred_fd; /* fd for a connection not seen accepted (its local address is looked up), else -1 */
    u16 status;
    u16 path_len;
    u8 method;
    u8 flags;
    u8 peer_family;
    u8 _pad2;
    u8 peer_addr[16];
    char path[RED_PATH_MAX];
};

#endif
