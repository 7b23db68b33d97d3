/* HTTP/1.x parsing for http_red: request lines, status lines and the ends of headers, over the
 * bytes of one read or write copied into per-CPU scratch memory. No maps are used here; every
 * helper is inlined into the programs of http_red.bpf.c.
 *
 * The verifier tricks (OPAQUE, LAUNDER, branch-free find_all4, the hidden mask of pipe_index)
 * each say which limit they work around; keep them when changing the code around them. */
#ifndef CORAL_HTTP_PARSE_H
#define CORAL_HTTP_PARSE_H

#ifndef RED_SCRATCH
#define RED_SCRATCH 1024 /* power of two: bytes of one read/write that are inspected */
#endif

/* Hide a value from the optimiser so branch-free arithmetic is not turned back into branches. */
#define OPAQUE(v)    asm volatile("" : "+r"(v))
#define FIND_CHUNK   64
#define RED_PIPE_MAX (RED_DEPTH < 8 ? RED_DEPTH : 8) /* pipelined requests found in one read/write */
#define SCRATCH_MASK (RED_SCRATCH - 1)
#define PATH_MASK    (RED_PATH_MAX - 1)

enum { P_NO = 0, P_MORE = 1, P_OK = 2 };

struct pending {
    u64 start_ns;
    u16 path_len;
    u8 method;
    u8 flags;
    u32 _pad;
    char path[RED_PATH_MAX];
};

struct scratch_buf {
    char buf[RED_SCRATCH + RED_PATH_MAX]; /* room for an assembled line before the bytes read */
    u32 cell[4];
    u32 pos[RED_PIPE_MAX]; /* positions found by find_all4 */
    /* handed from a syscall program to the pipelining program it tail-calls */
    struct conn_key key;
    u32 from;
    u32 n;
    u32 line;
    u32 method;
    u32 k;     /* red_pipe_next, red_pipe_write_next: the next entry of pos[] */
    u32 found; /* entries of pos[] filled by find_all4 */
    u64 now;
};

/*
 * Pass a value through map memory: the verifier then sees an unknown (bounded by masks at use)
 * scalar instead of one of many constants, so the states after a loop or a switch converge and
 * are pruned. Without this the parser below exceeds the verifier's 1M-instruction budget.
 */
#define LAUNDER(s, i, val)                                                                                             \
    ({                                                                                                                 \
        ((volatile u32 *)(s)->cell)[i] = (val);                                                                        \
        ((volatile u32 *)(s)->cell)[i];                                                                                \
    })

static __always_inline int bodyless(u8 method)
{
    return method == M_GET || method == M_HEAD || method == M_DELETE || method == M_OPTIONS || method == M_TRACE;
}

static __always_inline char at(struct scratch_buf *s, u32 idx)
{
    return s->buf[idx & SCRATCH_MASK];
}

/* Compare the bytes at `off` with a method token followed by a space. */
static __always_inline int token(struct scratch_buf *s, u32 off, u32 n, const char *word, u32 len)
{
#pragma unroll
    for (u32 i = 0; i < 8; i++) {
        if (i >= len)
            return P_OK;
        if (off + i >= n)
            return P_MORE;
        if (at(s, off + i) != word[i])
            return P_NO;
    }
    return P_OK;
}

/* Which method opens the bytes at `off`: returns P_OK/P_MORE/P_NO, the method and its length. */
static __always_inline int method_at(struct scratch_buf *s, u32 off, u32 n, u8 *method, u32 *mlen)
{
    int r = P_NO;
    if (off >= n)
        return P_MORE;
    switch (at(s, off)) {
    case 'G':
        r = token(s, off, n, "GET ", 4);
        *method = M_GET;
        *mlen = 4;
        break;
    case 'H':
        r = token(s, off, n, "HEAD ", 5);
        *method = M_HEAD;
        *mlen = 5;
        break;
    case 'D':
        r = token(s, off, n, "DELETE ", 7);
        *method = M_DELETE;
        *mlen = 7;
        break;
    case 'O':
        r = token(s, off, n, "OPTIONS ", 8);
        *method = M_OPTIONS;
        *mlen = 8;
        break;
    case 'C':
        r = token(s, off, n, "CONNECT ", 8);
        *method = M_CONNECT;
        *mlen = 8;
        break;
    case 'T':
        r = token(s, off, n, "TRACE ", 6);
        *method = M_TRACE;
        *mlen = 6;
        break;
    case 'P':
        if (off + 1 >= n)
            return P_MORE;
        if (at(s, off + 1) == 'O') {
            r = token(s, off, n, "POST ", 5);
            *method = M_POST;
            *mlen = 5;
        } else if (at(s, off + 1) == 'U') {
            r = token(s, off, n, "PUT ", 4);
            *method = M_PUT;
            *mlen = 4;
        } else {
            r = token(s, off, n, "PATCH ", 6);
            *method = M_PATCH;
            *mlen = 6;
        }
        break;
    default:
        return P_NO;
    }
    return r;
}

static __always_inline int ends_target(char c)
{
    return c == ' ' || c == '?' || c == '\r' || c == '\n' || c == 0;
}

/*
 * Parse a request line at `off` into `slot`. P_MORE: the bytes end before the target starts.
 * strict: the target must end inside the bytes (pipelined requests). *end: index after the target.
 */
static __always_inline int parse_request(struct scratch_buf *s, u32 off, u32 n, int strict, struct pending *slot,
                                         u32 *end)
{
    u8 method = M_NONE;
    u32 mlen = 0;
    int r = method_at(s, off, n, &method, &mlen);
    if (r != P_OK)
        return r;
    u32 start = LAUNDER(s, 0, off + mlen);
    if (start >= n)
        return strict ? P_NO : P_MORE;
    char first = at(s, start);
    if (first != '/' && first != '*' && first != 'h')
        return P_NO;
    slot->method = method;
    slot->flags = 0;
    u32 len = 0;
    for (u32 i = 0; i <= RED_PATH_MAX; i++) {
        u32 idx = start + i;
        if (idx >= n) {
            /* The line goes on in the next read: assemble it unless it already fills line[]. */
            if (strict)
                return P_NO;
            if (n < RED_PATH_MAX)
                return P_MORE;
            slot->flags = RED_F_TRUNCATED;
            break;
        }
        char c = at(s, idx);
        if (ends_target(c))
            break;
        if (i == RED_PATH_MAX) {
            slot->flags = RED_F_TRUNCATED;
            break;
        }
        slot->path[i & PATH_MASK] = c;
        len = i + 1;
    }
    slot->path_len = len;
    *end = LAUNDER(s, 1, start + len);
    return P_OK;
}

/*
 * A request line at `off` without a loop over the target: its first RED_PATH_MAX bytes are copied
 * raw and user space finds where it ends (RED_F_SCAN). Used for pipelined requests, where the
 * verifier could not afford the byte loop of parse_request once per request.
 */
static __always_inline int parse_raw(struct scratch_buf *s, u32 off, u32 n, struct pending *slot)
{
    u8 method = M_NONE;
    u32 mlen = 0;
    if (method_at(s, off, n, &method, &mlen) != P_OK)
        return P_NO;
    u32 start = LAUNDER(s, 0, off + mlen) & SCRATCH_MASK;
    if (start >= n)
        return P_NO;
    char first = at(s, start);
    if (first != '/' && first != '*' && first != 'h')
        return P_NO;
    slot->method = method;
    slot->flags = RED_F_SCAN;
    bpf_probe_read_kernel(slot->path, RED_PATH_MAX, &s->buf[start]);
    u32 avail = n - start;
    slot->path_len = avail < RED_PATH_MAX ? avail : RED_PATH_MAX;
    return P_OK;
}

/*
 * Positions just after the first RED_PIPE_MAX occurrences of the 4 bytes `pattern` (big-endian)
 * in [from, n), stored in s->pos[]; returns how many. Branch-free inside a chunk, so the verifier
 * walks it straight through instead of keeping a pending state per byte (its jump-sequence limit
 * is 8192); the one data-dependent branch per chunk stops at the end of the bytes.
 */
static __always_inline u32 find_all4(struct scratch_buf *s, u32 from, u32 n, u32 pattern)
{
    u64 found = 0;
    u32 window = 0;
#pragma unroll
    for (int k = 0; k < RED_PIPE_MAX; k++)
        s->pos[k] = 0;
    for (u32 chunk = 0; chunk < RED_SCRATCH / FIND_CHUNK; chunk++) {
        u32 base = from + chunk * FIND_CHUNK;
        if (base >= n)
            break;
        for (u32 j = 0; j < FIND_CHUNK; j++) {
            u32 idx = base + j;
            window = (window << 8) | (u8)at(s, idx);
            u64 diff = (u64)(window ^ pattern);
            OPAQUE(diff);
            u64 equal = (diff - 1) >> 63; /* 1 when diff == 0 (diff < 2^32) */
            u64 before_end = (u64)idx - (u64)n;
            OPAQUE(before_end);
            before_end >>= 63; /* 1 when idx < n */
            u64 room = found - RED_PIPE_MAX;
            OPAQUE(room);
            room >>= 63; /* 1 while found < RED_PIPE_MAX */
            u64 hit = equal & before_end & room;
            OPAQUE(hit);
            u32 slot = found & (RED_PIPE_MAX - 1);
            s->pos[slot] |= (u32)((0 - hit) & (u64)(idx + 1));
            found += hit;
        }
    }
    return LAUNDER(s, 2, (u32)found);
}

/*
 * s->pos[] index of the k-th pipelined request. The mask is hidden from clang, which would drop it
 * (k < RED_PIPE_MAX already) and walk pos[] with a pointer: verifiers before 6.x lose that
 * pointer's bound across loop iterations and reject the program.
 */
static __always_inline u32 pipe_index(u32 k)
{
    OPAQUE(k);
    return k & (RED_PIPE_MAX - 1);
}

/* Status code of "HTTP/1.x NNN" at `off`, or 0. */
static __always_inline u16 status_at(struct scratch_buf *s, u32 off, u32 n)
{
    if (off + 12 > n)
        return 0;
    if (at(s, off) != 'H' || at(s, off + 1) != 'T' || at(s, off + 2) != 'T' || at(s, off + 3) != 'P' ||
        at(s, off + 4) != '/' || at(s, off + 5) != '1' || at(s, off + 6) != '.' || at(s, off + 8) != ' ')
        return 0;
    char d0 = at(s, off + 9), d1 = at(s, off + 10), d2 = at(s, off + 11);
    if (d0 < '1' || d0 > '5' || d1 < '0' || d1 > '9' || d2 < '0' || d2 > '9')
        return 0;
    return (d0 - '0') * 100 + (d1 - '0') * 10 + (d2 - '0');
}

#endif
