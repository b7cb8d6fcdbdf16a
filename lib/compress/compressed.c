/*
 * compressed.c - the persistent compressed allreduce: parameters, layout,
 * one step (feedback, algorithm, error averaging, statistics) and the
 * step-ahead helpers. A step is one schedule (compressed_step.c), the codec
 * work it does is compressed_codec.c's, checkpoints compressed_state.c's.
 */
#include "compressed.h"
#include "../coll/coll.h"
#include "../log.h"
#include "../progress.h"
#include "../params.h"
#include "../net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *algo_names[] = {"auto", "allgather", "two_phase", "ring"};

void terse_compressed_params_init(terse_compressed_params_t *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof(*p));
    p->struct_size = sizeof(*p);
    p->codec = "cnat8";
    p->ratio = 0.01;
    p->levels = 8;
    p->norm = 2;
    p->bucket = 512;
    p->error_feedback = 1;
    p->op = TERSE_AVG;
    p->seed = 0x7465727365ull; /* "terse" */
}

#define BAD(...)                                                                   \
    do {                                                                           \
        TERSE_WARN(COLL, "compressed_create: " __VA_ARGS__); \
        return TERSE_ERR_INVALID_ARG;                                              \
    } while (0)

static terse_status_t check_params(terse_comm_t *comm, size_t count, const terse_compressed_params_t *p,
                                   const terse_codec_ops_t **up, const terse_codec_ops_t **down,
                                   terse_compressed_algo_t *algo)
{
    if (!p->codec || !(*up = terse__codec_by_name(p->codec)))
        BAD("unknown codec \"%s\"", p->codec ? p->codec : "(null)");
    *down = p->server_codec ? terse__codec_by_name(p->server_codec) : *up;
    if (!*down)
        BAD("unknown server_codec \"%s\"", p->server_codec);
    if (!(p->ratio > 0 && p->ratio <= 1))
        BAD("ratio %g is not in (0, 1]", p->ratio);
    if (p->levels < 1 || p->levels > 30)
        BAD("levels %d is not in [1, 30]", p->levels);
    if (p->norm < 0 || p->norm > 2)
        BAD("norm %d: use 1, 2 or 0 (max norm)", p->norm);
    if (p->bucket > ((size_t)1 << 30))
        BAD("bucket %zu is too large", p->bucket);
    if (p->error_average_every < 0)
        BAD("error_average_every %d is negative", p->error_average_every);
    if (p->op != TERSE_SUM && p->op != TERSE_AVG)
        BAD("op must be TERSE_SUM or TERSE_AVG");
    if ((int)p->algo < TERSE_COMPRESSED_AUTO || p->algo > TERSE_COMPRESSED_RING)
        BAD("unknown algorithm %d", (int)p->algo);
    terse_compressed_algo_t a = p->algo;
    if (a == TERSE_COMPRESSED_AUTO && comm->cfg.compressed_algo[0] &&
        strcmp(comm->cfg.compressed_algo, "auto") != 0) {
        for (int i = 1; i <= TERSE_COMPRESSED_RING; i++)
            if (strcmp(comm->cfg.compressed_algo, algo_names[i]) == 0)
                a = (terse_compressed_algo_t)i;
        if (a == TERSE_COMPRESSED_AUTO)
            BAD("TERSE_COMPRESSED_ALGO=%s: use auto, allgather, two_phase or ring",
                comm->cfg.compressed_algo);
    }
    if (a == TERSE_COMPRESSED_AUTO) {
        /* One compression when codes are biased (feedback covers exactly one
         * error), when two ranks make both shapes cost the same; otherwise
         * the shape with the least time on the link - with TERSE_LINK_GBPS
         * (and TERSE_LINK_LATENCY_US) from a model of its bytes and steps,
         * else by the threshold measured on the loopback, where small
         * tensors go to the allgather's fewer steps. */
        int n = comm->size;
        if (p->server_error_feedback || p->server_codec)
            a = TERSE_COMPRESSED_TWO_PHASE;
        else if ((*up)->biased || n <= 2)
            a = TERSE_COMPRESSED_ALLGATHER;
        else if (comm->cfg.link_gbps > 0) {
            terse_codec_params_t cp = {.ratio = p->ratio, .levels = p->levels, .norm = p->norm, .bucket = p->bucket};
            double b = (double)(*up)->bound(&cp, count), beta = comm->cfg.link_gbps * 1e9 / 8,
                   alpha = comm->cfg.link_latency_us * 1e-6;
            /* allgather: n-1 steps of a whole code; two-phase: 2(n-1) steps of a 1/n code */
            double t_ag = (n - 1) * (alpha + b / beta), t_tp = 2.0 * (n - 1) * (alpha + b / n / beta);
            a = t_tp < t_ag ? TERSE_COMPRESSED_TWO_PHASE : TERSE_COMPRESSED_ALLGATHER;
        } else
            a = count * 4 < comm->cfg.compressed_threshold ? TERSE_COMPRESSED_ALLGATHER : TERSE_COMPRESSED_TWO_PHASE;
    }
    if (a == TERSE_COMPRESSED_ALLGATHER && (p->server_error_feedback || p->server_codec))
        BAD("server_codec and server_error_feedback need an owner per chunk: "
            "use the two_phase or ring algorithm");
    if (a == TERSE_COMPRESSED_RING && ((*up)->biased || (*up)->shared_support || p->error_feedback))
        BAD("the ring re-compresses partial sums at every hop: it needs an unbiased codec "
            "(not %s) and error_feedback = 0", (*up)->name);
    *algo = a;
    return TERSE_OK;
}

/* Zeroed, 64-byte aligned (the codecs' streaming stores want it). */
static float *alloc_floats(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, (n ? n : 1) * sizeof(float)))
        return NULL;
    memset(p, 0, (n ? n : 1) * sizeof(float));
    return p;
}

static size_t align_up(size_t v)
{
    return (v + TERSE_CODE_ALIGN - 1) & ~(size_t)(TERSE_CODE_ALIGN - 1);
}

/* Lay out n codes of the given sizes in one aligned, registered buffer. */
static terse_status_t code_area(terse_compressed_t *c, int which, int ncodes, const size_t *sizes,
                                char **buf, size_t **off, size_t **len)
{
    *off = calloc((size_t)ncodes, sizeof(size_t));
    *len = calloc((size_t)ncodes, sizeof(size_t));
    if (!*off || !*len)
        return TERSE_ERR_NO_MEMORY;
    size_t total = 0;
    for (int i = 0; i < ncodes; i++) {
        (*off)[i] = total;
        (*len)[i] = sizes[i];
        total += align_up(sizes[i]);
    }
    if (posix_memalign((void **)buf, 4096, total ? total : TERSE_CODE_ALIGN))
        return TERSE_ERR_NO_MEMORY;
    memset(*buf, 0, total ? total : TERSE_CODE_ALIGN);
    if (total && c->n > 1) {
        terse_status_t st = terse_mem_register(c->comm, *buf, total, &c->regs[which]);
        if (st == TERSE_ERR_MEMLOCK)
            return st; /* the caller sees why; nothing is half-built */
        if (st != TERSE_OK)
            c->regs[which] = NULL; /* sends go through the bounce buffers instead */
    }
    return TERSE_OK;
}

static terse_status_t layout(terse_compressed_t *c)
{
    int n = c->n, r = c->r;
    size_t *sz = calloc((size_t)n, sizeof(size_t));
    c->off = calloc((size_t)n, sizeof(size_t));
    c->len = calloc((size_t)n, sizeof(size_t));
    if (!sz || !c->off || !c->len) {
        free(sz);
        return TERSE_ERR_NO_MEMORY;
    }
    size_t base = c->count / (size_t)n, rem = c->count % (size_t)n, pos = 0;
    for (int j = 0; j < n; j++) {
        c->off[j] = pos;
        c->len[j] = base + ((size_t)j < rem);
        pos += c->len[j];
    }
    terse_status_t st;
    if (c->algo == TERSE_COMPRESSED_ALLGATHER) {
        /* Slot i of the gather area holds rank i's code; ours is encoded in place. */
        for (int j = 0; j < n; j++)
            sz[j] = c->up->bound(&c->cp, c->count);
        st = code_area(c, 0, n, sz, &c->in_codes, &c->in_off, &c->in_len);
    } else {
        for (int j = 0; j < n; j++)
            sz[j] = c->up->bound(&c->cp, c->len[j]);
        st = code_area(c, 0, n, sz, &c->up_codes, &c->up_off, &c->up_len);
        if (st == TERSE_OK) {
            /* two-phase: every rank's code of our chunk; ring: one slot per block */
            for (int j = 0; j < n; j++)
                sz[j] = c->up->bound(&c->cp, c->len[c->algo == TERSE_COMPRESSED_RING ? j : r]);
            st = code_area(c, 1, n, sz, &c->in_codes, &c->in_off, &c->in_len);
        }
        if (st == TERSE_OK) {
            for (int j = 0; j < n; j++)
                sz[j] = c->down->bound(&c->cp, c->len[j]);
            st = code_area(c, 2, n, sz, &c->down_codes, &c->down_off, &c->down_len);
        }
    }
    free(sz);
    return st;
}

terse_status_t terse_compressed_create(terse_comm_t *comm, size_t count,
                                       const terse_compressed_params_t *params,
                                       terse_compressed_t **out)
{
    if (!comm || !out)
        return TERSE_ERR_INVALID_ARG;
    *out = NULL;
    if (comm->error != TERSE_OK)
        return comm->error;
    terse_compressed_params_t p;
    terse_compressed_params_init(&p);
    if (params)
        terse__params_copy(&p, params, sizeof(p));
    if (p.bucket == 0)
        p.bucket = 512;
    if (count > ((size_t)1 << 34))
        BAD("count %zu is beyond 2^34 values", count);
    if (count / (size_t)comm->size > UINT32_MAX)
        BAD("chunks of %zu values exceed the codecs' 32-bit indices", count / (size_t)comm->size);
    const terse_codec_ops_t *up, *down;
    terse_compressed_algo_t algo;
    terse_status_t st = check_params(comm, count, &p, &up, &down, &algo);
    if (st != TERSE_OK)
        return st;

    terse_compressed_t *c = calloc(1, sizeof(*c));
    if (!c)
        return TERSE_ERR_NO_MEMORY;
    c->comm = comm;
    c->n = comm->size;
    c->r = comm->rank;
    c->count = count;
    c->up = up;
    c->down = down;
    c->algo = algo;
    snprintf(c->codec_name, sizeof(c->codec_name), "%s", up->name);
    snprintf(c->server_codec_name, sizeof(c->server_codec_name), "%s", down->name);
    p.codec = c->codec_name;
    p.server_codec = p.server_codec ? c->server_codec_name : NULL;
    p.algo = algo;
    c->p = p;
    c->cp = (terse_codec_params_t){.ratio = p.ratio, .levels = p.levels, .norm = p.norm,
                                   .bucket = p.bucket};
    /* Everything that must agree across ranks goes into the wire signature. */
    uint64_t h = terse__mix64(0x636f6d70ull, count);
    h = terse__mix64(h, (uint64_t)up->id);
    h = terse__mix64(h, (uint64_t)down->id);
    uint64_t rbits;
    memcpy(&rbits, &p.ratio, 8);
    h = terse__mix64(h, rbits);
    h = terse__mix64(h, ((uint64_t)p.levels << 32) | ((uint64_t)p.norm << 16) | (uint64_t)algo);
    h = terse__mix64(h, p.bucket);
    h = terse__mix64(h, ((uint64_t)p.error_feedback << 40) | ((uint64_t)p.server_error_feedback << 32) |
                   ((uint64_t)(uint32_t)p.error_average_every));
    h = terse__mix64(h, (uint64_t)p.op);
    c->sig = terse__mix64(h, p.seed);
    c->rng_up = (terse_rng_t){terse__mix64(terse__mix64(p.seed, (uint64_t)c->r), 1), 0};
    c->rng_down = (terse_rng_t){terse__mix64(terse__mix64(p.seed, (uint64_t)c->r), 2), 0};

    size_t own = 0;
    st = layout(c);
    if (st == TERSE_OK) {
        own = c->len[c->r];
        c->e = alloc_floats(count);
        c->e_next = alloc_floats(count);
        c->se = calloc(own ? own : 1, sizeof(float));
        c->se_next = calloc(own ? own : 1, sizeof(float));
        c->acc = calloc(own ? own : 1, sizeof(float));
        if (!c->e || !c->e_next || !c->se || !c->se_next || !c->acc)
            st = TERSE_ERR_NO_MEMORY;
    }
    if (st != TERSE_OK) {
        terse_compressed_destroy(c);
        return st;
    }
    TERSE_INFO(COLL,
              "compressed allreduce: %zu values, codec %s, downlink %s, algorithm %s, "
              "feedback worker %d server %d, error averaging every %d", count, up->name,
              down->name, algo_names[algo], p.error_feedback, p.server_error_feedback,
              p.error_average_every);
    *out = c;
    return TERSE_OK;
}

void terse_compressed_destroy(terse_compressed_t *c)
{
    if (!c)
        return;
    /* a step in flight reads and writes this handle: let it end first */
    terse__ctx_settle(c->comm->ctx, &c->inflight);
    for (int i = 0; i < 3; i++)
        if (c->regs[i])
            terse_mem_deregister(c->comm, c->regs[i]);
    free(c->off), free(c->len);
    free(c->up_codes), free(c->up_off), free(c->up_len);
    free(c->in_codes), free(c->in_off), free(c->in_len);
    free(c->down_codes), free(c->down_off), free(c->down_len);
    free(c->e), free(c->e_next), free(c->se), free(c->se_next), free(c->acc);
    free(c);
}

static double norm2(const float *v, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)v[i] * (double)v[i];
    return sqrt(s);
}

static uint64_t dense_bytes(const terse_compressed_t *c)
{
    return c->n > 1 ? 2 * (uint64_t)(c->n - 1) * 4 * c->count / (uint64_t)c->n : 0;
}

static terse_status_t check_step(const terse_compressed_t *c, const float *sendbuf, const float *recvbuf)
{
    if (!c || (!sendbuf && c->count) || (!recvbuf && c->count))
        return TERSE_ERR_INVALID_ARG;
    if (INFLIGHT(c)) {
        TERSE_WARN(COLL, "compressed allreduce: a step of this handle is in flight (wait for it first)");
        return TERSE_ERR_BUSY;
    }
    return c->comm->error;
}

terse_status_t terse_compressed_allreduce(terse_compressed_t *c, const float *sendbuf, float *recvbuf)
{
    terse_status_t st = check_step(c, sendbuf, recvbuf);
    if (st != TERSE_OK)
        return st;
    return terse__compressed_start(c, sendbuf, recvbuf, NULL);
}

terse_status_t terse_compressed_allreduce_start(terse_compressed_t *c, const float *sendbuf, float *recvbuf,
                                                terse_request_t **req)
{
    if (!req)
        return TERSE_ERR_INVALID_ARG;
    terse_status_t st = check_step(c, sendbuf, recvbuf);
    if (st != TERSE_OK)
        return st; /* *req untouched: it may name the step in flight */
    *req = NULL;
    return terse__compressed_start(c, sendbuf, recvbuf, req);
}

terse_status_t terse_compressed_step_ahead(const terse_compressed_t *c, const float *x, float *y)
{
    if (!c || ((!x || !y) && c->count))
        return TERSE_ERR_INVALID_ARG;
    for (size_t i = 0; i < c->count; i++)
        y[i] = x[i] - c->e[i];
    return TERSE_OK;
}

terse_status_t terse_compressed_scale_residual(terse_compressed_t *c, float factor)
{
    if (!c || !isfinite(factor))
        return TERSE_ERR_INVALID_ARG;
    if (INFLIGHT(c))
        return TERSE_ERR_BUSY; /* the step in flight reads e */
    for (size_t i = 0; i < c->count; i++)
        c->e[i] *= factor;
    for (size_t i = 0; i < c->len[c->r]; i++)
        c->se[i] *= factor;
    return TERSE_OK;
}

terse_status_t terse_compressed_residual(const terse_compressed_t *c, float *out)
{
    if (!c || (!out && c->count))
        return TERSE_ERR_INVALID_ARG;
    memcpy(out, c->e, c->count * sizeof(float));
    return TERSE_OK;
}

terse_status_t terse_compressed_stats(const terse_compressed_t *c, terse_compressed_stats_t *s)
{
    if (!c || !s)
        return TERSE_ERR_INVALID_ARG;
    memset(s, 0, sizeof(*s));
    terse__ctx_lock(c->comm->ctx); /* a step in flight may end meanwhile */
    s->steps = c->steps;
    s->error_averages = c->error_averages;
    s->bytes_sent = c->bytes_last;
    s->bytes_sent_total = c->bytes_total;
    s->dense_bytes = dense_bytes(c);
    s->ratio = c->steps && s->dense_bytes ? (double)c->bytes_total / ((double)c->steps * (double)s->dense_bytes)
                                          : 0;
    /* computed here, not on every call: a pass over the tensor is not free */
    s->residual_norm = c->p.error_feedback ? norm2(c->e, c->count) : 0;
    s->server_residual_norm = c->p.server_error_feedback ? norm2(c->se, c->len[c->r]) : 0;
    s->algorithm = algo_names[c->algo];
    s->codec = c->up->name;
    terse__ctx_unlock(c->comm->ctx);
    return TERSE_OK;
}
