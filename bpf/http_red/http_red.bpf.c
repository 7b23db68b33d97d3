/*
 * http_red: HTTP/1.x RED data (rate, errors, duration) for chosen processes, from syscall
 * tracepoints only (no kprobes, no kernel struct layouts), for the agent's built-in RED engine.
 *
 * A connection is a (tgid, fd) pair: created when a target process accepts a socket (or, with
 * RED_INFER_CONNS, when it reads bytes that open an HTTP request on an fd we never saw accepted).
 * Each connection holds a FIFO of requests waiting for their response (keep-alive, pipelining).
 *   read side  (read/recvfrom/readv/recvmsg, at exit: only the bytes actually read)
 *     - no request pending: the bytes must open a request ("METHOD /target"); a request line
 *       split across reads is assembled in the connection (up to RED_PATH_MAX bytes of it).
 *     - a request pending: the bytes are body or header continuation, unless the pending request
 *       has no body by its method (GET, HEAD, DELETE, OPTIONS, TRACE) and the bytes hold a
 *       complete request target: then it is a pipelined request. Body bytes of POST/PUT/PATCH
 *       are therefore never taken for a request, whatever they contain.
 *     - inside one read, requests without a body that follow the end of headers ("\r\n\r\n")
 *       are pipelined requests too (within the first RED_SCRATCH bytes).
 *   write side (write/sendto/writev/sendmsg, at entry: the bytes about to be sent) "HTTP/1.x NNN"
 *     completes the oldest pending request; 1xx (except 101) is informational; 101 ends HTTP on
 *     the connection. Further status lines in the same write complete further pipelined requests.
 *   close: pending requests are reported with status 0 (no response), like Beyla.
 * The first bytes read on a connection that do not open a request mark it non-HTTP for good.
 * Limits are documented in docs/red.md.
 */
#include <uapi/linux/ptrace.h>

#include "http_red/http_red.h"
#include "http_red/http_parse.h"

#ifndef RED_MAX_TARGETS
#define RED_MAX_TARGETS 4096
#endif
#define RED_INSPECT (RED_SCRATCH - 1) /* bytes of one read/write copied for inspection */
#define DEPTH_MASK  (RED_DEPTH - 1)

/* connection states */
#define ST_UNKNOWN  0
#define ST_HTTP     1
#define ST_NOT_HTTP 2

/* io kinds saved at syscall enter */
#define IO_PLAIN  0 /* buf, count */
#define IO_IOV    1 /* struct iovec *, first iovec inspected */
#define IO_MSG    2 /* struct user_msghdr *, first iovec inspected */
#define IO_ACCEPT 3 /* listening fd, struct sockaddr * of the peer */

struct conn {
    u64 id;
    u64 line_ns;
    s32 listen_fd;
    u8 state;
    u8 first;
    u8 count;
    u8 line_len;
    u8 inferred;
    u8 peer_family;
    u16 peer_port;
    u32 _pad;
    u8 peer_addr[16];
    char line[RED_PATH_MAX]; /* a request line split across reads, assembled here */
    struct pending q[RED_DEPTH];
};

struct io_args {
    u64 ptr;
    u64 aux;
    s32 fd;
    u32 kind;
};

struct user_iovec {
    u64 base;
    u64 len;
};

BPF_HASH(targets, u32, u8, RED_MAX_TARGETS);
/*
 * A pre-filter over `targets`: slot tgid % RED_FILTER_SLOTS counts the targets that fall there
 * (user space keeps it). The JIT inlines array lookups, so the syscalls of every other process on
 * the host leave each program after one load instead of a hash lookup.
 */
BPF_ARRAY(target_filter, u32, RED_FILTER_SLOTS);
BPF_TABLE("lru_hash", struct conn_key, struct conn, conns, RED_MAX_CONNS);
BPF_TABLE("lru_hash", u64, struct io_args, io_args, 16384);
BPF_PERCPU_ARRAY(scratch, struct scratch_buf, 1);
BPF_PERCPU_ARRAY(conn_template, struct conn, 1);
BPF_PERCPU_ARRAY(counters, u64, C_COUNT);
/*
 * Pipelining is looked for in separate programs, tail-called: verified on their own, each stays
 * far below the verifier's budget (inline, the combined program exceeded it). User space fills
 * the slots TAIL_* (coral_ebpf/probes/http_red/loader.py); an empty slot makes the tail call a
 * no-op.
 */
BPF_PROG_ARRAY(tails, TAIL_COUNT);

#define CHANNEL_EVENT struct red_event
#include "common/event_channel.h"

static __always_inline void count(int idx)
{
    u64 *value = counters.lookup(&idx);
    if (value)
        *value += 1;
}

static __always_inline int maybe_target(u32 tgid)
{
    u32 slot = tgid & (RED_FILTER_SLOTS - 1);
    u32 *targets_in_slot = target_filter.lookup(&slot);
    return targets_in_slot && *targets_in_slot;
}

static __always_inline int is_target(u32 tgid)
{
    return maybe_target(tgid) && targets.lookup(&tgid) != NULL;
}

static __always_inline void fill_event(struct red_event *ev, struct conn_key *key, struct conn *c, struct pending *p,
                                       u16 status, u8 flags, u64 now)
{
    ev->start_ns = p->start_ns;
    ev->end_ns = now;
    ev->conn_id = c->id;
    ev->tgid = key->tgid;
    ev->pid = (u32)bpf_get_current_pid_tgid();
    ev->fd = key->fd;
    ev->peer_port = c->peer_port;
    ev->_pad = 0;
    ev->listen_fd = c->listen_fd;
    ev->inferred_fd = c->inferred ? key->fd : -1;
    ev->status = status;
    ev->path_len = p->path_len;
    ev->method = p->method;
    ev->flags = flags | (p->flags & (RED_F_TRUNCATED | RED_F_SCAN)) | (c->inferred ? RED_F_INFERRED : 0);
    ev->peer_family = c->peer_family;
    ev->_pad2 = 0;
    __builtin_memcpy(ev->peer_addr, c->peer_addr, 16);
    __builtin_memcpy(ev->path, p->path, RED_PATH_MAX);
}

/* Complete the oldest pending request of `c` with `status`. */
static __always_inline void complete(void *ctx, struct conn_key *key, struct conn *c, u16 status, u8 flags, u64 now)
{
    if (c->count == 0)
        return;
    struct pending *p = &c->q[c->first & DEPTH_MASK];
    /* Ring buffer: filled in place, no copy through a scratch event. A full channel counts the
     * event in channel_lost. */
    struct red_event *ev = channel_reserve();
    if (ev) {
        fill_event(ev, key, c, p, status, flags, now);
        if (channel_submit(ctx, ev) == 0)
            count(C_EVENTS);
    }
    c->first = (c->first + 1) & DEPTH_MASK;
    c->count -= 1;
}

/* The slot for a new request, or NULL when the FIFO is full. */
static __always_inline struct pending *push_slot(struct conn *c)
{
    if (c->count >= RED_DEPTH) {
        count(C_FIFO_FULL);
        return NULL;
    }
    return &c->q[(c->first + c->count) & DEPTH_MASK];
}

static __always_inline u64 first_iov(u64 vec, u64 *len)
{
    struct user_iovec iov = {};
    if (bpf_probe_read_user(&iov, sizeof(iov), (void *)vec) != 0)
        return 0;
    *len = iov.len;
    return iov.base;
}

/* The user buffer and the number of its bytes the syscall moved, from the saved enter args. */
static __always_inline u64 io_buffer(struct io_args *io, long ret, u32 *n)
{
    u64 ptr = io->ptr;
    u64 len = (u64)ret;
    if (io->kind == IO_MSG) {
        u64 vec = 0;
        if (bpf_probe_read_user(&vec, sizeof(vec), (void *)(ptr + 16)) != 0) /* user_msghdr.msg_iov */
            return 0;
        ptr = vec;
    }
    if (io->kind == IO_MSG || io->kind == IO_IOV) {
        u64 first_len = 0;
        ptr = first_iov(ptr, &first_len);
        if (first_len < len)
            len = first_len;
    }
    *n = len > 0xffffffff ? 0xffffffff : (u32)len;
    return ptr;
}

static __always_inline struct conn *new_conn(struct conn_key *key, s32 listen_fd, u8 inferred)
{
    int zero = 0;
    struct conn *tpl = conn_template.lookup(&zero);
    if (!tpl)
        return NULL;
    tpl->id = bpf_ktime_get_ns();
    tpl->line_ns = 0;
    tpl->listen_fd = listen_fd;
    tpl->state = ST_UNKNOWN;
    tpl->first = 0;
    tpl->count = 0;
    tpl->line_len = 0;
    tpl->inferred = inferred;
    tpl->peer_family = 0;
    tpl->peer_port = 0;
    __builtin_memset(tpl->peer_addr, 0, 16);
    conns.update(key, tpl);
    return conns.lookup(key);
}

static __always_inline void on_read(void *ctx, struct conn_key *key, struct io_args *io, long ret)
{
    u32 total = 0;
    u64 ptr = io_buffer(io, ret, &total);
    if (!ptr || total == 0)
        return;
    int zero = 0;
    struct scratch_buf *s = scratch.lookup(&zero);
    if (!s)
        return;
    struct conn *c = conns.lookup(key);
    if (!c) {
#if RED_INFER_CONNS
        /* An fd we never saw accepted (it predates the probe): only a whole "METHOD /" opens it. */
        if (bpf_probe_read_user(s->buf, 16, (void *)ptr) != 0)
            return;
        u8 method = 0;
        u32 mlen = 0;
        if (total < 16 || method_at(s, 0, 16, &method, &mlen) != P_OK || at(s, mlen) != '/')
            return;
        c = new_conn(key, -1, 1);
        if (!c)
            return;
        count(C_INFERRED);
#else
        return;
#endif
    }
    if (c->state == ST_NOT_HTTP)
        return;
    u64 now = bpf_ktime_get_ns();
    u32 line = c->line_len & PATH_MASK;
    if (c->count > 0)
        line = 0;
    if (line)
        __builtin_memcpy(s->buf, c->line, RED_PATH_MAX);
    u32 len = total > RED_INSPECT ? RED_INSPECT : total;
    len = LAUNDER(s, 3, len) & SCRATCH_MASK; /* keeps the mask: clang would drop it as redundant */
    if (bpf_probe_read_user(&s->buf[line], len, (void *)ptr) != 0)
        return;
    u32 n = line + len;
    if (n > RED_SCRATCH)
        n = RED_SCRATCH; /* at() wraps past RED_SCRATCH: parse only what it can see */
    s->key = *key;
    s->n = n;
    s->line = line;
    s->now = now;
    tails.call(ctx, TAIL_PARSE_READ);
}

/* Tail-called with the bytes read in scratch: a new request, a pipelined one, or neither. */
int red_parse_read(void *ctx)
{
    int zero = 0;
    struct scratch_buf *s = scratch.lookup(&zero);
    if (!s)
        return 0;
    struct conn_key key = s->key;
    struct conn *c = conns.lookup(&key);
    if (!c)
        return 0;
    u32 n = s->n;
    u32 line = s->line;
    u64 now = s->now;
    struct pending *slot;
    u32 end = 0;
    if (c->count > 0) {
        struct pending *tail = &c->q[(c->first + c->count - 1) & DEPTH_MASK];
        if (!bodyless(tail->method))
            return 0; /* body of a POST/PUT/PATCH: never a request, whatever it holds */
        slot = push_slot(c);
        if (!slot)
            return 0;
        if (parse_request(s, 0, n, 1, slot, &end) != P_OK)
            return 0; /* header continuation or body */
        slot->start_ns = now;
    } else {
        slot = &c->q[c->first & DEPTH_MASK];
        int r = parse_request(s, 0, n, 0, slot, &end);
        if (r == P_MORE) {
            /* The request line is split across reads (n < RED_PATH_MAX): keep it for the next one. */
            if (!line)
                c->line_ns = now;
            __builtin_memcpy(c->line, s->buf, RED_PATH_MAX);
            c->line_len = n;
            return 0;
        }
        c->line_len = 0;
        if (r == P_NO) {
            if (c->state == ST_UNKNOWN) {
                c->state = ST_NOT_HTTP;
                count(C_NOT_HTTP);
            }
            return 0;
        }
        slot->start_ns = line ? c->line_ns : now;
        c->state = ST_HTTP;
    }
    c->count += 1;
    if (!bodyless(slot->method) || end >= n)
        return 0;
    s->from = end;
    s->n = n;
    s->method = slot->method;
    s->now = now;
    tails.call(ctx, TAIL_PIPE_READ);
    return 0;
}

/*
 * At syscall entry: the bytes a write is about to send are already in its buffer, so the response
 * is recognised there, with no per-thread state saved for an exit program (that cost ~60 % of
 * the probe's time per request). `asked` is the size the write asks to send; a write that then
 * fails still completes its request (see docs/red.md).
 */
static __always_inline void on_write(void *ctx, struct conn_key *key, struct io_args *io, long asked)
{
    struct conn *c = conns.lookup(key);
    if (!c || c->state != ST_HTTP)
        return;
    u32 total = 0;
    u64 ptr = io_buffer(io, asked, &total);
    if (!ptr || total < 12)
        return;
    int zero = 0;
    struct scratch_buf *s = scratch.lookup(&zero);
    if (!s)
        return;
    /* Most writes answer one request: read 16 bytes first, the rest only for pipelining. */
    if (bpf_probe_read_user(s->buf, 16, (void *)ptr) != 0)
        return;
    u16 status = status_at(s, 0, 16);
    if (status == 0)
        return;
    if (c->count == 0) {
        count(C_UNMATCHED);
        return;
    }
    if (status < 200 && status != 101)
        return; /* 100 Continue and other informational responses precede the real one */
    u64 now = bpf_ktime_get_ns();
    complete(ctx, key, c, status, 0, now);
    if (status == 101) {
        c->state = ST_NOT_HTTP; /* protocol upgrade: what follows is not HTTP/1.x */
        return;
    }
    if (c->count == 0 || total <= 16)
        return;
    u32 len = total > RED_INSPECT ? RED_INSPECT : total;
    len = LAUNDER(s, 3, len) & SCRATCH_MASK;
    if (bpf_probe_read_user(s->buf, len, (void *)ptr) != 0)
        return;
    s->key = *key;
    s->n = len;
    s->now = now;
    tails.call(ctx, TAIL_PIPE_WRITE);
}

static __always_inline int save_io(u32 fd, u64 ptr, u64 aux, u32 kind)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!is_target(tgid))
        return 0;
    struct io_args io = {.ptr = ptr, .aux = aux, .fd = (s32)fd, .kind = kind};
    io_args.update(&id, &io);
    return 0;
}

/* A write on a traced connection; for iovecs `count` is unbounded and the first iovec's length applies. */
static __always_inline int enter_write(void *ctx, u32 fd, u64 ptr, u64 count, u32 kind)
{
    struct conn_key key = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (s32)fd};
    if (!maybe_target(key.tgid))
        return 0;
    struct io_args io = {.ptr = ptr, .aux = 0, .fd = (s32)fd, .kind = kind};
    long asked = count > 0x7fffffff ? 0x7fffffff : (long)count;
    on_write(ctx, &key, &io, asked);
    return 0;
}

static __always_inline int save_read(u32 fd, u64 ptr, u32 kind)
{
#if RED_INFER_CONNS
    return save_io(fd, ptr, 0, kind);
#else
    u64 id = bpf_get_current_pid_tgid();
    struct conn_key key = {.tgid = id >> 32, .fd = (s32)fd};
    if (!maybe_target(key.tgid) || !conns.lookup(&key))
        return 0;
    struct io_args io = {.ptr = ptr, .aux = 0, .fd = (s32)fd, .kind = kind};
    io_args.update(&id, &io);
    return 0;
#endif
}

static __always_inline int finish_read(void *ctx, long ret)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!maybe_target(id >> 32))
        return 0;
    struct io_args *io = io_args.lookup(&id);
    if (!io)
        return 0;
    struct io_args copy = *io;
    io_args.delete(&id);
    if (ret <= 0 || copy.kind == IO_ACCEPT)
        return 0;
    struct conn_key key = {.tgid = id >> 32, .fd = copy.fd};
    on_read(ctx, &key, &copy, ret);
    return 0;
}

static __always_inline int finish_accept(long ret)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!maybe_target(id >> 32))
        return 0;
    struct io_args *io = io_args.lookup(&id);
    if (!io)
        return 0;
    struct io_args copy = *io;
    io_args.delete(&id);
    if (ret < 0 || copy.kind != IO_ACCEPT)
        return 0;
    struct conn_key key = {.tgid = id >> 32, .fd = (s32)ret};
    struct conn *c = new_conn(&key, copy.fd, 0);
    if (!c)
        return 0;
    count(C_ACCEPTED);
    if (copy.ptr) {
        /* sockaddr_in: family, port, addr[4]; sockaddr_in6: family, port, flowinfo, addr[16] */
        u8 sa[24] = {};
        if (bpf_probe_read_user(sa, sizeof(sa), (void *)copy.ptr) == 0) {
            u16 family = sa[0] | (sa[1] << 8);
            c->peer_family = (u8)family;
            c->peer_port = (sa[2] << 8) | sa[3];
            if (family == 2)
                __builtin_memcpy(c->peer_addr, &sa[4], 4);
            else if (family == 10)
                __builtin_memcpy(c->peer_addr, &sa[8], 16);
        }
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept)
{
    return save_io(args->fd, (u64)args->upeer_sockaddr, 0, IO_ACCEPT);
}
TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
    return finish_accept(args->ret);
}
TRACEPOINT_PROBE(syscalls, sys_enter_accept4)
{
    return save_io(args->fd, (u64)args->upeer_sockaddr, 0, IO_ACCEPT);
}
TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
    return finish_accept(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
    return save_read(args->fd, (u64)args->buf, IO_PLAIN);
}
TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
    return finish_read(args, args->ret);
}
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    return save_read(args->fd, (u64)args->ubuf, IO_PLAIN);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom)
{
    return finish_read(args, args->ret);
}
TRACEPOINT_PROBE(syscalls, sys_enter_readv)
{
    return save_read(args->fd, (u64)args->vec, IO_IOV);
}
TRACEPOINT_PROBE(syscalls, sys_exit_readv)
{
    return finish_read(args, args->ret);
}
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    return save_read(args->fd, (u64)args->msg, IO_MSG);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg)
{
    return finish_read(args, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    return enter_write(args, args->fd, (u64)args->buf, args->count, IO_PLAIN);
}
TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
    return enter_write(args, args->fd, (u64)args->buff, args->len, IO_PLAIN);
}
TRACEPOINT_PROBE(syscalls, sys_enter_writev)
{
    return enter_write(args, args->fd, (u64)args->vec, ~0ULL, IO_IOV);
}
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
    return enter_write(args, args->fd, (u64)args->msg, ~0ULL, IO_MSG);
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!maybe_target(id >> 32))
        return 0; /* connections of processes no longer traced are removed from user space */
    struct conn_key key = {.tgid = id >> 32, .fd = (s32)args->fd};
    struct conn *c = conns.lookup(&key);
    if (!c)
        return 0;
    if (c->inferred) {
        /* An fd we never saw accepted might not be a socket at all: report responses only. */
        conns.delete(&key);
        return 0;
    }
    u64 now = bpf_ktime_get_ns();
#pragma unroll
    for (int i = 0; i < RED_DEPTH; i++) {
        if (c->count == 0)
            break;
        count(C_NO_RESPONSE);
        complete(args, &key, c, 0, RED_F_CLOSED, now);
    }
    conns.delete(&key);
    return 0;
}

/* Tail-called after a request was read: find where requests could follow it in the same read. */
int red_pipe_read(void *ctx)
{
    int zero = 0;
    struct scratch_buf *s = scratch.lookup(&zero);
    if (!s)
        return 0;
    s->found = find_all4(s, s->from, s->n, 0x0d0a0d0a);
    s->k = 0;
    tails.call(ctx, TAIL_PIPE_NEXT);
    return 0;
}

/*
 * Tail-called once per end of headers found by red_pipe_read: the request without a body that
 * follows it, if any, then itself for the next one. One request per program keeps each program
 * within what older verifiers can walk (a loop over RED_PIPE_MAX requests in one program exceeded
 * their 8192-branch limit on 5.10 and 6.1).
 */
int red_pipe_next(void *ctx)
{
    int zero = 0;
    struct scratch_buf *s = scratch.lookup(&zero);
    if (!s)
        return 0;
    struct conn_key key = s->key;
    struct conn *c = conns.lookup(&key);
    if (!c)
        return 0;
    u32 k = s->k;
    u32 n = s->n;
    if (k >= s->found || k >= RED_PIPE_MAX || !bodyless(s->method))
        return 0;
    u32 next = s->pos[pipe_index(k)];
    if (next >= n)
        return 0;
    struct pending *slot = push_slot(c);
    if (!slot)
        return 0;
    if (parse_raw(s, next, n, slot) != P_OK)
        return 0;
    slot->start_ns = s->now;
    c->count += 1;
    s->method = slot->method;
    s->k = k + 1;
    tails.call(ctx, TAIL_PIPE_NEXT);
    return 0;
}

/* Tail-called after a response completed a request: find further status lines in the same write. */
int red_pipe_write(void *ctx)
{
    int zero = 0;
    struct scratch_buf *s = scratch.lookup(&zero);
    if (!s)
        return 0;
    s->found = find_all4(s, 12, s->n, 0x48545450); /* "HTTP" */
    s->k = 0;
    tails.call(ctx, TAIL_PIPE_WRITE_NEXT);
    return 0;
}

/* Tail-called once per "HTTP" found by red_pipe_write: completes a request, then itself again. */
int red_pipe_write_next(void *ctx)
{
    int zero = 0;
    struct scratch_buf *s = scratch.lookup(&zero);
    if (!s)
        return 0;
    struct conn_key key = s->key;
    struct conn *c = conns.lookup(&key);
    if (!c)
        return 0;
    u32 k = s->k;
    if (k >= s->found || k >= RED_PIPE_MAX || c->count == 0)
        return 0;
    u32 after = s->pos[pipe_index(k)];
    if (after < 4)
        return 0;
    u16 next = status_at(s, after - 4, s->n);
    if (next >= 200 || next == 101)
        complete(ctx, &key, c, next, 0, s->now);
    if (next == 101) {
        c->state = ST_NOT_HTTP; /* protocol upgrade, as in on_write */
        return 0;
    }
    s->k = k + 1;
    tails.call(ctx, TAIL_PIPE_WRITE_NEXT);
    return 0;
}
