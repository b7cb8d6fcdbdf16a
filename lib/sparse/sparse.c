/*
 * sparse.c - the sparse allgather: message coding (delta-varint indices,
 * float32 / float16 / C_nat values, dense switch, skip and poison messages),
 * the all-to-all exchange with variable-length receives, and the two result
 * forms (concatenated lists, dense sum in rank order).
 */
#include "sparse.h"
#include "../coll/coll.h"
#include "../dtype.h"
#include "../log.h"
#include "../progress.h"
#include "../params.h"
#include "../net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HDR sizeof(terse_sparse_msg_hdr_t)

void terse_sparse_params_init(terse_sparse_params_t *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof(*p));
    p->struct_size = sizeof(*p);
    p->values = TERSE_SPARSE_FP32;
    p->dense_switch = 1;
    p->seed = 0x737061727365ull;
}

static size_t vsize(int vfmt)
{
    return vfmt == TERSE_SPARSE_FP16 ? 2 : vfmt == TERSE_SPARSE_CNAT8 ? 1 : 4;
}

terse_status_t terse_sparse_create(terse_comm_t *comm, size_t n, const terse_sparse_params_t *params,
                                   terse_sparse_t **out)
{
    if (!comm || !out)
        return TERSE_ERR_INVALID_ARG;
    *out = NULL;
    if (comm->error != TERSE_OK)
        return comm->error;
    terse_sparse_params_t p;
    terse_sparse_params_init(&p);
    if (params)
        terse__params_copy(&p, params, sizeof(p));
    if (n == 0 || n > UINT32_MAX) {
        TERSE_WARN(COLL, "sparse_create: n = %zu must be in [1, 2^32 - 1]", n);
        return TERSE_ERR_INVALID_ARG;
    }
    if ((int)p.values < TERSE_SPARSE_FP32 || p.values > TERSE_SPARSE_CNAT8) {
        TERSE_WARN(COLL, "sparse_create: unknown value format %d", (int)p.values);
        return TERSE_ERR_INVALID_ARG;
    }
    terse_sparse_t *s = calloc(1, sizeof(*s));
    if (!s)
        return TERSE_ERR_NO_MEMORY;
    s->comm = comm;
    s->n = comm->size;
    s->r = comm->rank;
    s->len = n;
    s->p = p;
    s->sig = terse__mix64(terse__mix64(terse__mix64(0x737073ull, n), (uint64_t)p.values), (uint64_t)(p.dense_switch != 0));
    s->rng = (terse_rng_t){terse__mix64(p.seed, (uint64_t)s->r), 0};
    s->rbuf = calloc((size_t)s->n, sizeof(*s->rbuf));
    s->rcap = calloc((size_t)s->n, sizeof(size_t));
    s->rlen = calloc((size_t)s->n, sizeof(size_t));
    s->parts = calloc((size_t)s->n, sizeof(*s->parts));
    s->counts = calloc((size_t)s->n, sizeof(size_t));
    s->offsets = calloc((size_t)s->n, sizeof(size_t));
    if (!s->rbuf || !s->rcap || !s->rlen || !s->parts || !s->counts || !s->offsets) {
        terse_sparse_destroy(s);
        return TERSE_ERR_NO_MEMORY;
    }
    *out = s;
    return TERSE_OK;
}

void terse_sparse_destroy(terse_sparse_t *s)
{
    if (!s)
        return;
    /* a call in flight writes into this handle: let it end first */
    terse__ctx_settle(s->comm->ctx, &s->inflight);
    for (int i = 0; s->rbuf && i < s->n; i++)
        free(s->rbuf[i]);
    for (int i = 0; s->parts && i < s->n; i++)
        free(s->parts[i].idx), free(s->parts[i].val);
    free(s->rbuf), free(s->rcap), free(s->rlen), free(s->parts), free(s->counts), free(s->offsets);
    if (s->msg_reg)
        terse_mem_deregister(s->comm, s->msg_reg);
    free(s->msg), free(s->sidx), free(s->sval), free(s->oidx), free(s->oval);
    free(s);
}

static int grow(void **buf, size_t *cap, size_t want, size_t elem)
{
    if (want <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < want)
        c *= 2;
    void *b = realloc(*buf, c * elem);
    if (!b)
        return -1;
    *buf = b;
    *cap = c;
    return 0;
}

/* The own message lives in registered memory so the verbs transport sends it
 * zero-copy. It only grows (doubling), so registrations stay few; when the
 * locked-memory limit refuses one, sends bounce (correct, one copy slower). */
static int msg_reserve(terse_sparse_t *s, size_t want)
{
    if (want <= s->msg_cap)
        return 0;
    size_t c = s->msg_cap ? s->msg_cap : 4096;
    while (c < want)
        c *= 2;
    unsigned char *b;
    if (posix_memalign((void **)&b, 4096, c))
        return -1;
    if (s->msg_reg)
        terse_mem_deregister(s->comm, s->msg_reg);
    s->msg_reg = NULL;
    free(s->msg);
    s->msg = b;
    s->msg_cap = c;
    if (s->n > 1) {
        terse_status_t st = terse_mem_register(s->comm, b, c, &s->msg_reg);
        if (st != TERSE_OK) {
            s->msg_reg = NULL;
            if (!s->reg_warned++)
                TERSE_WARN(COLL, "sparse collective: cannot register its %zu-byte message buffer (%s): "
                                 "sends are copied instead", c, terse_strerror(st));
        }
    }
    return 0;
}

/* ---- values ---------------------------------------------------------- */

static void put_values(terse_sparse_t *s, unsigned char *out, const float *v, size_t k)
{
    switch (s->p.values) {
    case TERSE_SPARSE_FP16:
        for (size_t i = 0; i < k; i++) {
            float f = v[i] > 65504.0f ? 65504.0f : v[i] < -65504.0f ? -65504.0f : v[i];
            uint16_t h = terse__float_to_half(f);
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    case TERSE_SPARSE_CNAT8: {
        uint64_t key = terse__rng_next(&s->rng);
        for (size_t i = 0; i < k; i++)
            out[i] = terse__cnat8_quantize(v[i], (terse__hash32((uint32_t)i + (uint32_t)key) ^
                                                  (uint32_t)(key >> 32)) >> 9);
        break;
    }
    default:
        memcpy(out, v, 4 * k);
    }
}

/* 0 when every value decodes finite */
static int get_values(int vfmt, const unsigned char *in, float *v, size_t k)
{
    int bad = 0;
    for (size_t i = 0; i < k; i++) {
        if (vfmt == TERSE_SPARSE_FP16) {
            uint16_t h;
            memcpy(&h, in + 2 * i, 2);
            v[i] = terse__half_to_float(h);
        } else if (vfmt == TERSE_SPARSE_CNAT8) {
            v[i] = terse__cnat8_value(in[i]);
        } else {
            memcpy(&v[i], in + 4 * i, 4);
        }
        bad |= !(v[i] - v[i] == 0.0f);
    }
    return bad;
}

/* ---- message coding --------------------------------------------------- */

static size_t varint_put(unsigned char *out, uint32_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (unsigned char)v;
    return n;
}

typedef struct {
    uint32_t idx, pos;
} pair_t;

static int cmp_pair(const void *a, const void *b)
{
    const pair_t *x = a, *y = b;
    return x->idx != y->idx ? (x->idx < y->idx ? -1 : 1) : (x->pos < y->pos ? -1 : x->pos > y->pos);
}

/* Valid input? (k <= len, indices in range, values finite) */
static int input_ok(const terse_sparse_t *s, const uint32_t *idx, const float *val, size_t k)
{
    if (k > s->len || (k && (!idx || !val)))
        return 0;
    for (size_t i = 0; i < k; i++)
        if (idx[i] >= s->len || !(val[i] - val[i] == 0.0f))
            return 0;
    return 1;
}

static terse_status_t encode_msg(terse_sparse_t *s, int kind, const uint32_t *idx, const float *val, size_t k,
                                 int dense_ok)
{
    size_t vs = vsize(s->p.values);
    terse_sparse_msg_hdr_t h = {.magic = TERSE_SPARSE_MAGIC, .kind = (uint8_t)kind, .vfmt = (uint8_t)s->p.values};
    if (kind == TERSE_SPMSG_LIST && !input_ok(s, idx, val, k)) {
        TERSE_WARN(COLL, "sparse collective: this rank's input breaks the rules (k %zu of n %zu, an "
                   "index >= n or a non-finite value)", k, s->len);
        kind = TERSE_SPMSG_POISON;
        h.kind = (uint8_t)kind;
    }
    if (kind == TERSE_SPMSG_LIST) {
        /* ascending indices (a stable sort of a copy when the input is not) */
        int sorted = 1;
        for (size_t i = 1; i < k && sorted; i++)
            sorted = idx[i - 1] <= idx[i];
        if (!sorted) {
            pair_t *pr = malloc(k * sizeof(pair_t));
            if (!pr || grow((void **)&s->sidx, &s->sicap, k, sizeof(uint32_t)) ||
                grow((void **)&s->sval, &s->svcap, k, sizeof(float)))
                return free(pr), TERSE_ERR_NO_MEMORY;
            for (size_t i = 0; i < k; i++)
                pr[i] = (pair_t){idx[i], (uint32_t)i};
            qsort(pr, k, sizeof(pair_t), cmp_pair);
            for (size_t i = 0; i < k; i++)
                s->sidx[i] = pr[i].idx, s->sval[i] = val[pr[i].pos];
            free(pr);
            idx = s->sidx, val = s->sval;
        }
        if (dense_ok && s->p.dense_switch && (5 * k + vs * k) >= vs * s->len) {
            /* estimate says the list is no smaller than the vector: send it dense */
            if (msg_reserve(s, HDR + vs * s->len))
                return TERSE_ERR_NO_MEMORY;
            float *dense = calloc(s->len, sizeof(float));
            if (!dense)
                return TERSE_ERR_NO_MEMORY;
            for (size_t i = 0; i < k; i++)
                dense[idx[i]] += val[i];
            h.kind = TERSE_SPMSG_DENSE;
            h.k = s->len;
            put_values(s, s->msg + HDR, dense, s->len);
            free(dense);
            memcpy(s->msg, &h, HDR);
            s->msg_len = HDR + vs * s->len;
            s->dense_sends++;
            return TERSE_OK;
        }
        if (msg_reserve(s, HDR + (5 + vs) * k))
            return TERSE_ERR_NO_MEMORY;
        size_t w = HDR;
        uint32_t prev = 0;
        for (size_t i = 0; i < k; i++) {
            w += varint_put(s->msg + w, idx[i] - prev);
            prev = idx[i];
        }
        h.k = k;
        h.idx_bytes = w - HDR;
        put_values(s, s->msg + w, val, k);
        s->msg_len = w + vs * k;
    } else if (kind == TERSE_SPMSG_DENSE) {
        if (msg_reserve(s, HDR + vs * s->len))
            return TERSE_ERR_NO_MEMORY;
        h.k = s->len;
        put_values(s, s->msg + HDR, val, s->len);
        s->msg_len = HDR + vs * s->len;
    } else {
        if (msg_reserve(s, HDR))
            return TERSE_ERR_NO_MEMORY;
        s->msg_len = HDR;
    }
    memcpy(s->msg, &h, HDR);
    return TERSE_OK;
}

int terse__sparse_decode(terse_sparse_t *s, int r, const unsigned char *m, size_t len)
{
    terse_sparse_part_t *pt = &s->parts[r];
    terse_sparse_msg_hdr_t h;
    if (len < HDR)
        return -1;
    memcpy(&h, m, HDR);
    size_t vs = vsize(h.vfmt);
    if (h.magic != TERSE_SPARSE_MAGIC || h.vfmt != (uint8_t)s->p.values)
        return -1;
    pt->kind = h.kind;
    pt->k = 0;
    switch (h.kind) {
    case TERSE_SPMSG_SKIP:
    case TERSE_SPMSG_POISON:
        return len == HDR && h.k == 0 ? 0 : -1;
    case TERSE_SPMSG_DENSE:
        if (h.k != s->len || len != HDR + vs * s->len)
            return -1;
        if (grow((void **)&pt->val, &pt->vcap, s->len, sizeof(float)))
            return -1;
        pt->k = s->len;
        return get_values(h.vfmt, m + HDR, pt->val, s->len) ? -1 : 0;
    case TERSE_SPMSG_LIST: {
        if (h.k > s->len || h.idx_bytes > len || len != HDR + h.idx_bytes + vs * h.k)
            return -1;
        if (grow((void **)&pt->idx, &pt->icap, h.k, sizeof(uint32_t)) ||
            grow((void **)&pt->val, &pt->vcap, h.k, sizeof(float)))
            return -1;
        const unsigned char *q = m + HDR, *end = q + h.idx_bytes;
        uint64_t prev = 0;
        for (size_t i = 0; i < h.k; i++) {
            uint64_t v = 0;
            for (unsigned shift = 0;; shift += 7) {
                if (q == end || shift > 28)
                    return -1;
                unsigned char b = *q++;
                v |= (uint64_t)(b & 0x7f) << shift;
                if (!(b & 0x80))
                    break;
            }
            prev += v;
            if (prev >= s->len)
                return -1;
            pt->idx[i] = (uint32_t)prev;
        }
        if (q != end)
            return -1;
        pt->k = h.k;
        return get_values(h.vfmt, end, pt->val, h.k) ? -1 : 0;
    }
    default:
        return -1;
    }
}

static void *recv_alloc(void *arg, int peer, uint64_t total)
{
    terse_sparse_t *s = arg;
    if (grow((void **)&s->rbuf[peer], &s->rcap[peer], total ? total : 1, 1))
        return NULL;
    s->rlen[peer] = total;
    return s->rbuf[peer];
}

static void build_list(terse_sparse_t *s, terse_sparse_list_t *out, size_t total)
{
    size_t w = 0;
    for (int i = 0; i < s->n; i++) {
        const terse_sparse_part_t *pt = &s->parts[i];
        s->offsets[i] = w;
        s->counts[i] = pt->k;
        if (pt->k) { /* parts that never held pairs have no arrays */
            memcpy(s->oidx + w, pt->idx, pt->k * sizeof(uint32_t));
            memcpy(s->oval + w, pt->val, pt->k * sizeof(float));
        }
        w += pt->k;
    }
    *out = (terse_sparse_list_t){total, s->counts, s->offsets, s->oidx, s->oval};
}

/* out = sum of the parts in rank order */
void terse__sparse_accumulate(const terse_sparse_t *s, float *out)
{
    memset(out, 0, s->len * sizeof(float));
    for (int i = 0; i < s->n; i++) {
        const terse_sparse_part_t *pt = &s->parts[i];
        if (pt->kind == TERSE_SPMSG_DENSE)
            for (size_t j = 0; j < s->len; j++)
                out[j] += pt->val[j];
        else if (pt->kind == TERSE_SPMSG_LIST)
            for (size_t j = 0; j < pt->k; j++)
                out[pt->idx[j]] += pt->val[j];
    }
}

/* The exchange ended: decode every message, then produce the output and
 * count the call - or put the random stream back. */
static terse_status_t exchange_done(terse_request_t *req, void *arg, terse_status_t st)
{
    (void)req;
    terse_sparse_t *s = arg;
    terse_comm_t *comm = s->comm;
    int n = s->n, r = s->r;
    for (int i = 0; st == TERSE_OK && i < n; i++)
        if (i != r && terse__sparse_decode(s, i, s->rbuf[i], s->rlen[i])) {
            /* every later call fails; this one's peers see their own copy */
            terse__exec_fail(comm, TERSE_ERR_PROTOCOL, i, comm->next_seq, 1,
                             "sparse collective: malformed message from rank %d", i);
            st = TERSE_ERR_PROTOCOL;
        }
    /* our own part from our own message, so lossy values agree everywhere */
    if (st == TERSE_OK && terse__sparse_decode(s, r, s->msg, s->msg_len))
        st = TERSE_ERR_PROTOCOL;
    for (int i = 0; st == TERSE_OK && i < n; i++)
        if (s->parts[i].kind == TERSE_SPMSG_POISON) {
            TERSE_WARN(COLL, "sparse collective: rank %d's input breaks the rules", i);
            st = TERSE_ERR_INVALID_ARG;
        }
    if (st == TERSE_OK && s->mode == TERSE_SP_GATHER) {
        size_t total = 0;
        for (int i = 0; i < n; i++)
            total += s->parts[i].k;
        if (grow((void **)&s->oidx, &s->oicap, total ? total : 1, sizeof(uint32_t)) ||
            grow((void **)&s->oval, &s->ovcap, total ? total : 1, sizeof(float)))
            st = TERSE_ERR_NO_MEMORY;
        else
            build_list(s, s->out_list, total);
    } else if (st == TERSE_OK && s->mode == TERSE_SP_REDUCE) {
        terse__sparse_accumulate(s, s->out_dense);
    }
    if (st == TERSE_OK) {
        s->calls++;
        s->bytes_sent += s->sent_bytes;
    } else if (st != TERSE_ERR_INVALID_ARG) {
        s->rng = s->rng0; /* a failed call never happened (a refused input still counts) */
        s->dense_sends = s->dense0;
    } else {
        s->calls++;
        s->bytes_sent += s->sent_bytes;
    }
    if (s->then) { /* s->inflight stays until the caller reaps the request */
        terse_status_t (*then)(void *, terse_status_t) = s->then;
        s->then = NULL;
        st = then(s->then_arg, st);
    }
    return st;
}

terse_status_t terse__sparse_exchange_start(terse_sparse_t *s, uint64_t purpose, int kind, const uint32_t *idx,
                                            const float *val, size_t k, int dense_ok, int mode,
                                            terse_request_t **out)
{
    terse_comm_t *comm = s->comm;
    if (comm->error != TERSE_OK) {
        s->then = NULL;
        return comm->error;
    }
    if (INFLIGHT(s)) {
        TERSE_WARN(COLL, "sparse collective: a call of this handle is in flight (wait for it first)");
        s->then = NULL;
        return TERSE_ERR_BUSY;
    }
    s->rng0 = s->rng;
    s->dense0 = s->dense_sends;
    terse_status_t st = encode_msg(s, kind, idx, val, k, dense_ok);
    if (st != TERSE_OK) {
        s->then = NULL;
        return st;
    }
    int n = s->n, r = s->r;
    terse_request_t *req;
    if ((st = terse__sched_new(comm, TERSE_COLL_COMPRESSED, TERSE_FLOAT32, TERSE_SUM, -1, s->calls,
                               terse__mix64(s->sig, purpose), &req)) != TERSE_OK) {
        s->rng = s->rng0;
        s->then = NULL;
        return st;
    }
    /* the largest message any rank can send: a list of n pairs */
    size_t limit = HDR + (5 + 4) * s->len;
    int rc = 0;
    s->sent_bytes = n > 1 ? (uint64_t)(n - 1) * s->msg_len : 0;
    for (int d = 1; d < n && !rc; d++)
        rc = terse__sched_send_msg(req, (r + d) % n, s->msg, s->msg_len) < 0;
    for (int d = 1; d < n && !rc; d++)
        rc = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_VARLEN, (r + n - d) % n, NULL, NULL, limit, -1, -1) < 0;
    if (rc) {
        s->rng = s->rng0;
        s->then = NULL;
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    req->varlen_alloc = recv_alloc; /* notes each length */
    req->varlen_arg = s;
    req->call_arg = s;
    req->on_done = exchange_done;
    s->mode = mode;
    s->inflight = req;
    req->owner = &s->inflight;
    st = terse__coll_run(req, out);
    if (INFLIGHT(s) == req && (!out || st != TERSE_OK)) {
        s->inflight = NULL; /* refused before it ran */
        s->rng = s->rng0;
        s->then = NULL;
    }
    return st;
}

terse_status_t terse__sparse_exchange(terse_sparse_t *s, uint64_t purpose, int kind, const uint32_t *idx,
                                      const float *val, size_t k, int dense_ok)
{
    return terse__sparse_exchange_start(s, purpose, kind, idx, val, k, dense_ok, TERSE_SP_RAW, NULL);
}

terse_status_t terse_sparse_allgather_start(terse_sparse_t *s, const uint32_t *idx, const float *val, size_t k,
                                            terse_sparse_list_t *out, terse_request_t **req)
{
    if (!s || !out)
        return TERSE_ERR_INVALID_ARG;
    s->out_list = out;
    return terse__sparse_exchange_start(s, 1, TERSE_SPMSG_LIST, idx, val, k, 0, TERSE_SP_GATHER, req);
}

terse_status_t terse_sparse_allgather(terse_sparse_t *s, const uint32_t *idx, const float *val, size_t k,
                                      terse_sparse_list_t *out)
{
    return terse_sparse_allgather_start(s, idx, val, k, out, NULL);
}

terse_status_t terse_sparse_allreduce_start(terse_sparse_t *s, const uint32_t *idx, const float *val, size_t k,
                                            float *out, terse_request_t **req)
{
    if (!s || !out)
        return TERSE_ERR_INVALID_ARG;
    s->out_dense = out;
    return terse__sparse_exchange_start(s, 2, TERSE_SPMSG_LIST, idx, val, k, 1, TERSE_SP_REDUCE, req);
}

terse_status_t terse_sparse_allreduce(terse_sparse_t *s, const uint32_t *idx, const float *val, size_t k,
                                      float *out)
{
    return terse_sparse_allreduce_start(s, idx, val, k, out, NULL);
}

terse_status_t terse_sparse_stats(const terse_sparse_t *s, terse_sparse_stats_t *stats)
{
    if (!s || !stats)
        return TERSE_ERR_INVALID_ARG;
    terse__ctx_lock(s->comm->ctx);
    *stats = (terse_sparse_stats_t){s->calls, s->bytes_sent, s->dense_sends};
    terse__ctx_unlock(s->comm->ctx);
    return TERSE_OK;
}
