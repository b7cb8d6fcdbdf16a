/*
 * partial.c - the partial allreduce handle: parameters, buffers, and the
 * caller's side of a step (contribute, wait, read the result). The rounds
 * themselves are in partial_round.c.
 */
#include "partial.h"
#include "../executor.h"
#include "../log.h"
#include "../net.h"
#include "../params.h"
#include "../progress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BAD(...)                                \
    do {                                        \
        TERSE_WARN(COLL, "partial allreduce: " __VA_ARGS__); \
        return TERSE_ERR_INVALID_ARG;           \
    } while (0)

void terse_partial_params_init(terse_partial_params_t *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof(*p));
    p->struct_size = sizeof(*p);
    p->codec = "fp32";
    p->op = TERSE_SUM;
    p->min_contributors = 1;
    p->lookahead = 2;
}

static terse_status_t check_params(const terse_comm_t *comm, terse_partial_params_t *p,
                                   const terse_codec_ops_t **codec, int *quorum)
{
    int n = comm->size;
    *codec = terse__codec_by_name(p->codec ? p->codec : "fp32");
    if (!*codec)
        BAD("unknown codec \"%s\"", p->codec);
    if ((*codec)->shared_support)
        BAD("codec %s draws its positions from a per-step shared seed: not supported here", (*codec)->name);
    if (p->op != TERSE_SUM && p->op != TERSE_AVG)
        BAD("op must be TERSE_SUM or TERSE_AVG");
    if (p->lookahead == 0)
        p->lookahead = 2;
    if (p->lookahead < 1 || p->lookahead > TERSE_PARTIAL_MAX_LOOKAHEAD)
        BAD("lookahead %d is outside [1, %d]", p->lookahead, TERSE_PARTIAL_MAX_LOOKAHEAD);
    if (p->max_stale < 0)
        BAD("max_stale %d is negative", p->max_stale);
    if (p->error_feedback < -1 || p->error_feedback > 1)
        BAD("error_feedback must be -1 (off), 0 (default) or 1 (on)");
    if (p->gc != TERSE_GC_NONE) {
        if (p->gc != TERSE_GC_FRACTIONAL && p->gc != TERSE_GC_CYCLIC)
            BAD("unknown gradient coding scheme %d", (int)p->gc);
        if (p->gc_s < 0 || p->gc_s >= n)
            BAD("gc_s %d: need 0 <= s < n = %d", p->gc_s, n);
        if (p->gc == TERSE_GC_FRACTIONAL && n % (p->gc_s + 1))
            BAD("fractional repetition needs s + 1 = %d to divide n = %d", p->gc_s + 1, n);
        if (p->policy == TERSE_PARTIAL_ALL && p->quorum == 0)
            p->policy = TERSE_PARTIAL_QUORUM; /* the point of the code */
        if (p->policy == TERSE_PARTIAL_QUORUM && p->quorum == 0)
            p->quorum = n - p->gc_s;
        if (p->policy != TERSE_PARTIAL_ALL && (p->policy != TERSE_PARTIAL_QUORUM || p->quorum < n - p->gc_s))
            BAD("gradient coding with s = %d needs QUORUM(k >= %d) or ALL", p->gc_s, n - p->gc_s);
    }
    *quorum = n;
    switch (p->policy) {
    case TERSE_PARTIAL_ALL:
    case TERSE_PARTIAL_SOLO:
    case TERSE_PARTIAL_MAJORITY:
        break;
    case TERSE_PARTIAL_QUORUM:
        if (p->quorum < 1 || p->quorum > n)
            BAD("quorum %d is outside [1, n = %d]", p->quorum, n);
        *quorum = p->quorum;
        break;
    case TERSE_PARTIAL_DEADLINE:
        if (!(p->deadline_sec > 0) || !isfinite(p->deadline_sec))
            BAD("deadline_sec must be a positive number of seconds (got %g)", p->deadline_sec);
        if (p->min_contributors == 0)
            p->min_contributors = 1;
        if (p->min_contributors < 1 || p->min_contributors > n)
            BAD("min_contributors %d is outside [1, n = %d]", p->min_contributors, n);
        break;
    default:
        BAD("unknown policy %d", (int)p->policy);
    }
    return TERSE_OK;
}

static void free_handle(terse_partial_t *h)
{
    for (int i = 0; i < TERSE_PARTIAL_MAX_LOOKAHEAD; i++) {
        partial_slot_t *s = &h->slot[i];
        free(s->in), free(s->called), free(s->contrib), free(s->decision);
        free(s->codes), free(s->lens), free(s->result), free(s->stale);
    }
    free(h->e), free(h->e_next), free(h->code), free(h->tmp), free(h->stale), free(h->coef);
    terse_gc_destroy(h->gc);
    free(h);
}

static int alloc_buffers(terse_partial_t *h)
{
    size_t n = (size_t)h->n, w = (size_t)h->words;
    int ok = (h->e = calloc(h->count + 1, sizeof(float))) && (h->e_next = calloc(h->count + 1, sizeof(float))) &&
             (h->code = malloc(h->bound)) && (h->tmp = malloc(sizeof(float) * (h->count + 1))) &&
             (h->stale = calloc(n, sizeof(uint32_t))) && (h->coef = calloc(n, sizeof(double)));
    for (int i = 0; i < h->lookahead && ok; i++) {
        partial_slot_t *s = &h->slot[i];
        ok = (s->in = calloc(n, sizeof(partial_arrive_t))) && (s->called = calloc(w, 8)) &&
             (s->contrib = calloc(w, 8)) && (s->decision = calloc(1, sizeof(partial_decide_t) + 8 * w)) &&
             (s->codes = malloc(n * h->bound)) && (s->lens = calloc(n, sizeof(size_t))) &&
             (s->result = malloc(sizeof(float) * (h->count + 1))) && (s->stale = calloc(n, sizeof(uint32_t)));
    }
    return ok;
}

terse_status_t terse_partial_create(terse_comm_t *comm, size_t count, const terse_partial_params_t *params,
                                    terse_partial_t **out)
{
    if (!comm || !out)
        return TERSE_ERR_INVALID_ARG;
    *out = NULL;
    if (comm->error != TERSE_OK)
        return comm->error;
    terse_partial_params_t p;
    terse_partial_params_init(&p);
    if (params)
        terse__params_copy(&p, params, sizeof(p));
    if (count > ((size_t)1 << 32))
        BAD("count %zu is beyond 2^32 values", count);
    const terse_codec_ops_t *codec;
    int quorum;
    terse_status_t st = check_params(comm, &p, &codec, &quorum);
    if (st != TERSE_OK)
        return st;
    terse_partial_t *h = calloc(1, sizeof(*h));
    if (!h)
        return TERSE_ERR_NO_MEMORY;
    h->n = comm->size;
    h->r = comm->rank;
    h->words = (h->n + 63) / 64;
    h->count = count;
    snprintf(h->codec_name, sizeof(h->codec_name), "%s", codec->name);
    p.codec = h->codec_name;
    h->p = p;
    h->codec = codec;
    h->cp = (terse_codec_params_t){.ratio = 0.01, .levels = 8, .norm = 2, .bucket = p.bucket ? p.bucket : 512};
    h->bound = codec->bound(&h->cp, count);
    h->ef = p.error_feedback == 1 || (p.error_feedback == 0 && codec->biased);
    h->lookahead = p.lookahead;
    h->quorum = quorum;
    uint64_t sig = terse__mix64(0x7061727469616cull, count);
    sig = terse__mix64(sig, ((uint64_t)codec->id << 48) | ((uint64_t)p.policy << 40) | ((uint64_t)p.gc << 32) |
                                ((uint64_t)(uint32_t)p.gc_s << 8) | (uint64_t)p.op);
    sig = terse__mix64(sig, ((uint64_t)(uint32_t)quorum << 32) | (uint32_t)p.min_contributors);
    uint64_t dbits;
    memcpy(&dbits, &p.deadline_sec, 8);
    sig = terse__mix64(sig, dbits);
    sig = terse__mix64(sig, ((uint64_t)(uint32_t)p.max_stale << 32) | ((uint64_t)p.fold_late << 16) |
                                ((uint64_t)h->ef << 8) | (uint64_t)p.lookahead);
    sig = terse__mix64(sig, h->cp.bucket);
    h->sig = terse__mix64(sig, p.seed);
    h->rng = (terse_rng_t){terse__mix64(terse__mix64(p.seed, (uint64_t)h->r), 0x31626974ull), 0};
    if (!alloc_buffers(h)) {
        free_handle(h);
        return TERSE_ERR_NO_MEMORY;
    }
    if (p.gc != TERSE_GC_NONE && (st = terse_gc_create(h->n, p.gc_s, p.gc, p.seed, &h->gc)) != TERSE_OK) {
        free_handle(h);
        return st;
    }
    if (!comm->ctx->thread_on)
        TERSE_INFO(COLL, "partial allreduce: no progress thread (TERSE_PROGRESS_THREAD=1): steps wait for "
                         "every rank's call");
    /* its own communicator: R1 of later steps is queued ahead of the
     * caller's calls, which must not interleave with comm's */
    st = terse_comm_dup(comm, &h->comm);
    if (st != TERSE_OK) {
        free_handle(h);
        return st;
    }
    terse_ctx_t *ctx = h->comm->ctx;
    terse__ctx_lock(ctx);
    terse__partial_post(h);
    terse__ctx_unlock(ctx);
    *out = h;
    return TERSE_OK;
}

void terse_partial_destroy(terse_partial_t *h)
{
    if (!h)
        return;
    terse_ctx_t *ctx = h->comm->ctx;
    terse__ctx_lock(ctx);
    h->closing = 1;
    /* rounds prepared for steps nobody decided: drop them quietly */
    for (int i = 0; i < h->lookahead; i++)
        if (h->slot[i].r1 && !h->slot[i].decided)
            terse__exec_cancel(h->slot[i].r1);
    /* The agreement rounds of the steps this rank has had still carry what
     * the others need from it (a decision, an arrival): let them end. */
    double deadline = terse__now() + h->comm->cfg.timeout_sec;
    for (int i = 0; i < h->lookahead; i++) {
        partial_slot_t *s = &h->slot[i];
        if (s->r1 && s->step < h->consumed && h->comm->error == TERSE_OK)
            terse__progress_until_time(ctx, &s->r1_ended, deadline);
    }
    terse__ctx_unlock(ctx);
    terse_comm_destroy(h->comm); /* cancels the rounds still queued */
    free_handle(h);
}

/* Until the slot holds the step this rank calls next: its round is
 * prepared once the slot's previous step has ended everywhere it must. */
static void wait_armed(terse_partial_t *h, partial_slot_t *s)
{
    terse_ctx_t *ctx = h->comm->ctx;
    while (!s->armed && h->comm->error == TERSE_OK)
        terse__progress_until_time(ctx, &s->armed, terse__now() + 0.1);
}

/* This rank's contribution to slot s, made before the decision. */
static terse_status_t contribute(terse_partial_t *h, partial_slot_t *s, const float *sendbuf)
{
    if (!sendbuf) {
        terse__partial_arrive(h, s, ARRIVE_EMPTY);
        return TERSE_OK;
    }
    const float *u = sendbuf;
    if (!h->ef && h->p.fold_late) { /* send what was folded in too */
        for (size_t i = 0; i < h->count; i++)
            h->e_next[i] = sendbuf[i] + h->e[i];
        u = h->e_next;
    }
    terse_status_t st = terse__codec_encode_ef(h->codec, &h->cp, u, h->ef ? h->e : NULL, h->ef ? h->e_next : NULL,
                                               h->count, h->code, &h->code_len, &h->rng);
    if (st != TERSE_OK)
        return st; /* nothing was sent: the step stays open for this rank */
    terse__partial_arrive(h, s, ARRIVE_CODE);
    return TERSE_OK;
}

/* After the step: the residual as the decision says. */
static void settle_residual(terse_partial_t *h, const float *sendbuf, int included)
{
    if (!sendbuf)
        return;
    if (included) {
        if (h->ef)
            memcpy(h->e, h->e_next, sizeof(float) * h->count);
        else if (h->p.fold_late)
            memset(h->e, 0, sizeof(float) * h->count);
    } else if (h->p.fold_late) {
        for (size_t i = 0; i < h->count; i++)
            h->e[i] += sendbuf[i];
    }
}

terse_status_t terse_partial_allreduce(terse_partial_t *h, const float *sendbuf, float *recvbuf,
                                       terse_partial_info_t *info)
{
    if (!h || (!recvbuf && h->count))
        return TERSE_ERR_INVALID_ARG;
    terse_ctx_t *ctx = h->comm->ctx;
    terse__ctx_lock(ctx);
    partial_slot_t *s = partial_slot(h, h->consumed);
    terse_status_t st = TERSE_OK;
    wait_armed(h, s);
    if (h->comm->error != TERSE_OK && !s->done) {
        st = h->comm->error;
        goto out;
    }
    int late = 1;
    if (!s->opened && !s->done) {
        st = contribute(h, s, sendbuf);
        if (st != TERSE_OK)
            goto out;
        late = 0;
    }
    terse__progress_until(ctx, &s->done);
    if ((st = s->status) != TERSE_OK)
        goto out;
    const partial_decide_t *d = (const partial_decide_t *)s->decision;
    const uint64_t *set = (const uint64_t *)(d + 1);
    int included = partial_in(set, h->r);
    settle_residual(h, sendbuf, included); /* a late contribution is one left out */
    if (h->count)
        memcpy(recvbuf, s->result, sizeof(float) * h->count);
    if (info) {
        info->step = s->step;
        info->contributors = (int)d->ncontrib;
        info->set = set;
        info->staleness = s->stale;
        info->included = included;
        info->late = !included && sendbuf != NULL && (late || s->out.present == ARRIVE_CODE);
        info->forced = (int)d->forced;
        info->bytes_sent = s->bytes;
    }
    h->consumed++;
    s->armed = 0;
    terse__partial_post(h);
out:
    terse__ctx_unlock(ctx);
    return st;
}

terse_status_t terse_partial_wait_decision(terse_partial_t *h, double timeout_sec, int *decided)
{
    if (!h || !decided || !(timeout_sec >= 0))
        return TERSE_ERR_INVALID_ARG;
    terse_ctx_t *ctx = h->comm->ctx;
    terse__ctx_lock(ctx);
    partial_slot_t *s = partial_slot(h, h->consumed);
    double deadline = terse__now() + timeout_sec;
    *decided = 0;
    while (!s->armed && h->comm->error == TERSE_OK && terse__now() < deadline)
        terse__progress_until_time(ctx, &s->armed, fmin(deadline, terse__now() + 0.1));
    if (s->armed)
        *decided = terse__progress_until_time(ctx, &s->decided, deadline);
    terse_status_t st = h->comm->error;
    terse__ctx_unlock(ctx);
    return st;
}

int terse_partial_behind(terse_partial_t *h)
{
    if (!h)
        return 0;
    terse_ctx_t *ctx = h->comm->ctx;
    terse__ctx_lock(ctx);
    int k = 0;
    for (uint64_t t = h->consumed; t < h->posted && partial_slot(h, t)->armed && partial_slot(h, t)->decided; t++)
        k++;
    terse__ctx_unlock(ctx);
    return k;
}

terse_status_t terse_partial_residual(const terse_partial_t *h, float *out)
{
    if (!h || (!out && h->count))
        return TERSE_ERR_INVALID_ARG;
    terse__ctx_lock(h->comm->ctx);
    if (h->count)
        memcpy(out, h->e, sizeof(float) * h->count);
    terse__ctx_unlock(h->comm->ctx);
    return TERSE_OK;
}
