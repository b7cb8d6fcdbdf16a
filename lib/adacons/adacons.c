/*
 * adacons.c - AdaCons aggregation (include/terse.h, "AdaCons"). With dense
 * allreduces a step is one request: allreduce(g -> S), a fence, the local
 * coefficient, an allgather of (a_i, ||g_i||, signature) per rank, a fence,
 * the weights and the scaled gradient, allreduce(scaled -> out), a fence, the
 * fallback or rescale - so the non-blocking form comes from the executor.
 * With a compressed allreduce the same local steps run between blocking
 * calls (compressed steps are their own requests).
 */
#include "../checkpoint.h"
#include "../coll/coll.h"
#include "../compress/compressed.h"
#include "../log.h"
#include "../net.h"
#include "../params.h"
#include "../progress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* What each rank contributes to the allgather. */
typedef struct {
    double a, norm;
    uint64_t sig;
} slot_t;

struct terse_adacons {
    terse_comm_t *comm;
    int n, r;
    size_t count;
    terse_adacons_params_t p;
    uint64_t sig;
    terse_compressed_t *csum, *ccomb; /* NULL: dense */
    float *S, *scaled;
    slot_t *gather;         /* [n] */
    double *coef, *alpha, *mu, *mu_next; /* [n] */
    int *order;             /* [n] ranks by ascending a (ties: rank) */
    int mu_init;
    uint64_t steps, fallbacks;
    int fallback, bad;      /* this step: took the mean; a rank's input was not finite */
    double mean_norm;
    const float *g;         /* the step in flight */
    float *out;
    terse_request_t *inflight;
};

#define BAD(...)                                                   \
    do {                                                           \
        TERSE_WARN(COLL, "adacons_create: " __VA_ARGS__);          \
        return TERSE_ERR_INVALID_ARG;                              \
    } while (0)

void terse_adacons_params_init(terse_adacons_params_t *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof(*p));
    p->struct_size = sizeof(*p);
    p->beta = 0.99;
    p->eps = 1e-8;
}

static int dense(const char *codec) { return !codec || !strcmp(codec, "fp32"); }

static terse_status_t make_compressed(terse_adacons_t *h, const char *codec, terse_compressed_t **out)
{
    if (dense(codec))
        return TERSE_OK;
    terse_compressed_params_t cp;
    terse_compressed_params_init(&cp);
    cp.codec = codec;
    cp.op = TERSE_SUM;
    cp.seed = h->p.seed;
    if (h->p.error_feedback)
        cp.error_feedback = h->p.error_feedback > 0;
    else
        cp.error_feedback = strcmp(codec, "sign") == 0 || strncmp(codec, "topk", 4) == 0; /* biased ones */
    return terse_compressed_create(h->comm, h->count, &cp, out);
}

void terse_adacons_destroy(terse_adacons_t *h)
{
    if (!h)
        return;
    terse__ctx_settle(h->comm->ctx, &h->inflight);
    terse_compressed_destroy(h->csum);
    terse_compressed_destroy(h->ccomb);
    free(h->S), free(h->scaled), free(h->gather), free(h->coef), free(h->alpha), free(h->mu), free(h->mu_next);
    free(h->order);
    free(h);
}

terse_status_t terse_adacons_create(terse_comm_t *comm, size_t count, const terse_adacons_params_t *params,
                                    terse_adacons_t **out)
{
    if (!comm || !out)
        return TERSE_ERR_INVALID_ARG;
    *out = NULL;
    if (comm->error != TERSE_OK)
        return comm->error;
    terse_adacons_params_t p;
    terse_adacons_params_init(&p);
    if (params)
        terse__params_copy(&p, params, sizeof(p));
    if (!(p.beta >= 0 && p.beta < 1))
        BAD("beta %g is outside [0, 1)", p.beta);
    if (!(p.eps > 0) || !isfinite(p.eps))
        BAD("eps %g must be positive", p.eps);
    if (p.rescale != 0 && p.rescale != 1)
        BAD("rescale must be 0 or 1");
    if (p.error_feedback < -1 || p.error_feedback > 1)
        BAD("error_feedback must be -1, 0 or 1");
    if (count > ((size_t)1 << 32))
        BAD("count %zu is beyond 2^32 values", count);
    terse_adacons_t *h = calloc(1, sizeof(*h));
    if (!h)
        return TERSE_ERR_NO_MEMORY;
    h->comm = comm, h->n = comm->size, h->r = comm->rank, h->count = count, h->p = p;
    size_t n = (size_t)h->n;
    if (!(h->S = malloc(sizeof(float) * (count + 1))) || !(h->scaled = malloc(sizeof(float) * (count + 1))) ||
        !(h->gather = calloc(n, sizeof(slot_t))) || !(h->coef = calloc(n, 8)) || !(h->alpha = calloc(n, 8)) ||
        !(h->mu = calloc(n, 8)) || !(h->mu_next = calloc(n, 8)) || !(h->order = calloc(n, sizeof(int)))) {
        terse_adacons_destroy(h);
        return TERSE_ERR_NO_MEMORY;
    }
    terse_status_t st = make_compressed(h, p.codec_sum, &h->csum);
    if (st == TERSE_OK)
        st = make_compressed(h, p.codec_combine, &h->ccomb);
    if (st != TERSE_OK) {
        terse_adacons_destroy(h);
        return st;
    }
    /* everything the ranks must agree on travels in the allgather */
    uint64_t bits[2];
    memcpy(&bits[0], &p.beta, 8);
    memcpy(&bits[1], &p.eps, 8);
    uint64_t sig = terse__mix64(0x616461636f6e73ull, count);
    sig = terse__mix64(terse__mix64(sig, bits[0]), bits[1]);
    sig = terse__mix64(sig, ((uint64_t)p.rescale << 8) | (uint64_t)(p.error_feedback + 1));
    sig = terse__hash64(p.codec_sum ? p.codec_sum : "fp32", strlen(p.codec_sum ? p.codec_sum : "fp32"), sig);
    sig = terse__hash64(p.codec_combine ? p.codec_combine : "fp32",
                        strlen(p.codec_combine ? p.codec_combine : "fp32"), sig);
    h->sig = terse__mix64(sig, p.seed);
    *out = h;
    return TERSE_OK;
}

/* ---- the local steps ------------------------------------------------------- */

/* a_i and ||g_i|| from S, into this rank's allgather slot (double, index order). */
static void local_coefficient(terse_adacons_t *h)
{
    double dot = 0, sq = 0;
    int finite = 1;
    for (size_t i = 0; i < h->count; i++) {
        double g = h->g[i];
        dot += (double)h->S[i] * g;
        sq += g * g;
        finite &= isfinite(h->g[i]) != 0;
    }
    double norm = sqrt(sq);
    slot_t *me = &h->gather[h->r];
    me->a = finite ? dot / h->n / (norm + h->p.eps) : NAN;
    me->norm = finite ? norm : NAN;
    me->sig = h->sig;
}

/* order[] = ranks by ascending a, ties in rank order: an insertion sort
 * (stable, no shared comparator state; n is the rank count). */
static void sort_ranks(terse_adacons_t *h)
{
    for (int x = 1; x < h->n; x++) {
        int v = h->order[x], y = x;
        for (; y > 0 && h->gather[h->order[y - 1]].a > h->gather[v].a; y--)
            h->order[y] = h->order[y - 1];
        h->order[y] = v;
    }
}

/* The weights from the gathered coefficients; the scaled gradient. Returns
 * TERSE_ERR_MISMATCH when the ranks' parameters differ; a non-finite input
 * anywhere sets h->bad (every rank sees the same gather). */
static terse_status_t weights(terse_adacons_t *h)
{
    int n = h->n;
    double norm_sum = 0;
    h->bad = 0;
    for (int i = 0; i < n; i++) {
        if (h->gather[i].sig != h->sig) {
            TERSE_WARN(COLL, "adacons: rank %d has other parameters or count than rank %d", i, h->r);
            return TERSE_ERR_MISMATCH;
        }
        h->bad |= !isfinite(h->gather[i].a) || !isfinite(h->gather[i].norm);
        h->coef[i] = h->gather[i].a;
        h->order[i] = i;
        norm_sum += h->gather[i].norm;
    }
    h->mean_norm = norm_sum / n;
    if (h->bad) {
        memset(h->scaled, 0, sizeof(float) * h->count);
        return TERSE_OK;
    }
    sort_ranks(h);
    /* mu over sorted positions; rank order[k] has the k-th smallest a and gets mu[k] */
    double sum = 0;
    int negative = 0;
    for (int k = 0; k < n; k++) {
        double sorted = h->gather[h->order[k]].a;
        h->mu_next[k] = h->mu_init ? h->p.beta * h->mu[k] + (1 - h->p.beta) * sorted : sorted;
    }
    for (int k = 0; k < n; k++) {
        h->alpha[h->order[k]] = h->mu_next[k];
        sum += h->mu_next[k];
        negative |= h->mu_next[k] < 0;
    }
    h->fallback = !(sum > h->p.eps) || negative;
    for (int i = 0; i < n; i++)
        h->alpha[i] = h->fallback ? 1.0 / n : h->alpha[i] / sum;
    double norm = h->gather[h->r].norm;
    float scale = h->fallback || norm == 0 ? 0.0f : (float)(h->alpha[h->r] / norm);
    for (size_t i = 0; i < h->count; i++)
        h->scaled[i] = scale * h->g[i];
    return TERSE_OK;
}

/* The result: the mean when the weights fell back, else G (rescaled). */
static void finish(terse_adacons_t *h)
{
    if (h->bad)
        return;
    if (h->fallback) {
        for (size_t i = 0; i < h->count; i++)
            h->out[i] = h->S[i] / (float)h->n;
    } else if (h->p.rescale) {
        float m = (float)h->mean_norm;
        for (size_t i = 0; i < h->count; i++)
            h->out[i] *= m;
    }
}

/* The step is over: commit the momentum and counters, or leave them. */
static terse_status_t commit(terse_adacons_t *h, terse_status_t st)
{
    if (st == TERSE_OK && h->bad) {
        TERSE_WARN(COLL, "adacons: a rank's gradient is not finite: step refused on every rank");
        return TERSE_ERR_INVALID_ARG;
    }
    if (st != TERSE_OK)
        return st;
    memcpy(h->mu, h->mu_next, sizeof(double) * (size_t)h->n);
    h->mu_init = 1;
    h->steps++;
    h->fallbacks += (uint64_t)h->fallback;
    return TERSE_OK;
}

/* ---- one request (dense) ---------------------------------------------------- */

/* A local op that waits for every op from `first` on (a chain of no-ops). */
static int fence(terse_request_t *req, int first)
{
    int last = -1, end = req->nops;
    for (int i = first; i < end; i++) {
        if (req->ops[i].kind == TERSE_OPK_SEND)
            continue; /* sends read inputs the later phases do not write */
        last = terse__sched_add(req, TERSE_OPK_LOCAL, TERSE_ACT_MEMCPY, -1, NULL, NULL, 0, i, last);
        if (last < 0)
            return -2;
    }
    return last;
}

static terse_status_t call_coef(terse_request_t *req, void *arg, size_t idx)
{
    (void)req, (void)idx;
    local_coefficient(arg);
    return TERSE_OK;
}

static terse_status_t call_weights(terse_request_t *req, void *arg, size_t idx)
{
    (void)req, (void)idx;
    return weights(arg);
}

static terse_status_t call_finish(terse_request_t *req, void *arg, size_t idx)
{
    (void)req, (void)idx;
    terse_adacons_t *h = arg;
    if (!h->bad)
        memcpy(h->out, h->scaled, sizeof(float) * h->count);
    finish(h);
    return TERSE_OK;
}

static terse_status_t step_done(terse_request_t *req, void *arg, terse_status_t st)
{
    (void)req;
    return commit(arg, st);
}

static int build(terse_request_t *req, terse_adacons_t *h)
{
    uint64_t algo;
    int n = h->n;
    if (terse__allreduce_build(req, h->g, h->S, h->count, &algo))
        return -1;
    int f1 = fence(req, 0);
    if (f1 < -1)
        return -1;
    int c1 = terse__sched_call(req, call_coef, 0, f1, -1);
    if (c1 < 0)
        return -1;
    int first = req->nops;
    if (n > 1) {
        size_t *len = malloc(sizeof(size_t) * (size_t)n), *off = malloc(sizeof(size_t) * (size_t)n);
        terse_blocks_t b;
        int rc = !len || !off;
        for (int i = 0; !rc && i < n; i++)
            len[i] = sizeof(slot_t), off[i] = (size_t)i * sizeof(slot_t);
        if (!rc)
            rc = terse__blocks_v(&b, n, len, off, 1, h->comm->chunk);
        if (!rc) {
            int own = terse__blocks_nchunks(&b, h->r), *rdy = malloc(sizeof(int) * (size_t)(own ? own : 1));
            rc = !rdy;
            for (int k = 0; !rc && k < own; k++)
                rdy[k] = c1;
            if (!rc)
                rc = terse__ring_allgather(req, &b, (char *)h->gather, (char *)&h->gather[h->r], rdy, NULL);
            free(rdy);
            terse__blocks_free(&b);
        }
        free(len), free(off);
        if (rc)
            return -1;
    }
    int f2 = fence(req, first);
    if (f2 < -1)
        return -1;
    int c2 = terse__sched_call(req, call_weights, 0, f2 >= 0 ? f2 : c1, c1);
    if (c2 < 0)
        return -1;
    first = req->nops;
    /* in place: an out-of-place build copies its input now, before it is made */
    if (terse__allreduce_build(req, h->scaled, h->scaled, h->count, &algo))
        return -1;
    terse__sched_gate(req, first, c2);
    int f3 = fence(req, first);
    if (f3 < -1)
        return -1;
    return terse__sched_call(req, call_finish, 0, f3 >= 0 ? f3 : c2, c2) < 0 ? -1 : 0;
}

static terse_status_t check_step(terse_adacons_t *h, const float *g, float *out)
{
    if (!h || (h->count && (!g || !out)))
        return TERSE_ERR_INVALID_ARG;
    if (INFLIGHT(h))
        return TERSE_ERR_BUSY;
    return h->comm->error;
}

terse_status_t terse_adacons_step_start(terse_adacons_t *h, const float *g, float *out, terse_request_t **req_out)
{
    terse_status_t st = check_step(h, g, out);
    if (st != TERSE_OK)
        return st;
    if (h->csum || h->ccomb)
        return TERSE_ERR_UNSUPPORTED;
    terse_request_t *req;
    if ((st = terse__sched_new(h->comm, TERSE_COLL_ADACONS, TERSE_FLOAT32, TERSE_SUM, -1, h->count, 0x6164u, &req)) !=
        TERSE_OK)
        return st;
    h->g = g, h->out = out;
    if (build(req, h)) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    req->call_arg = h;
    req->on_done = step_done;
    h->inflight = req;
    req->owner = &h->inflight;
    st = terse__coll_run(req, req_out);
    if (INFLIGHT(h) == req && (!req_out || st != TERSE_OK))
        h->inflight = NULL;
    return st;
}

/* ---- blocking, through compressed allreduces --------------------------------- */

static terse_status_t sum_into(terse_adacons_t *h, terse_compressed_t *c, const float *in, float *out)
{
    return c ? terse_compressed_allreduce(c, in, out)
             : terse_allreduce(h->comm, in, out, h->count, TERSE_FLOAT32, TERSE_SUM);
}

terse_status_t terse_adacons_step(terse_adacons_t *h, const float *g, float *out)
{
    if (h && !h->csum && !h->ccomb)
        return terse_adacons_step_start(h, g, out, NULL);
    terse_status_t st = check_step(h, g, out);
    if (st != TERSE_OK)
        return st;
    h->g = g, h->out = out;
    if ((st = sum_into(h, h->csum, g, h->S)) != TERSE_OK)
        return st;
    local_coefficient(h);
    slot_t mine = h->gather[h->r];
    if ((st = terse_allgather(h->comm, &mine, h->gather, sizeof(slot_t) / 4, TERSE_INT32)) != TERSE_OK)
        return st;
    if ((st = weights(h)) != TERSE_OK) {
        terse__exec_fail(h->comm, st, -1, h->comm->next_seq, 0, "adacons: ranks passed different parameters");
        return st;
    }
    if (h->bad) /* every rank knows: no second exchange, nothing committed */
        return commit(h, TERSE_OK);
    if ((st = sum_into(h, h->ccomb, h->scaled, out)) != TERSE_OK)
        return st;
    finish(h);
    return commit(h, TERSE_OK);
}

/* ---- statistics and checkpoints ---------------------------------------------- */

terse_status_t terse_adacons_stats(const terse_adacons_t *h, terse_adacons_stats_t *s)
{
    if (!h || !s)
        return TERSE_ERR_INVALID_ARG;
    *s = (terse_adacons_stats_t){h->steps, h->fallbacks, h->fallback, h->mean_norm, h->coef, h->alpha};
    return TERSE_OK;
}

#define ADACONS_MAGIC "TRSEADAC"
#define ADACONS_VERSION 1u

typedef struct {
    terse_ckpt_id_t id;
    uint64_t count, sig, steps, fallbacks, sum_len, comb_len;
    int32_t mu_init, pad;
} adacons_hdr_t;

size_t terse_adacons_state_size(const terse_adacons_t *h)
{
    if (!h)
        return 0;
    return sizeof(adacons_hdr_t) + sizeof(double) * (size_t)h->n + terse_compressed_state_size(h->csum) +
           terse_compressed_state_size(h->ccomb) + TERSE_CKPT_TRAILER;
}

terse_status_t terse_adacons_save(const terse_adacons_t *h, void *buf, size_t len)
{
    if (!h || !buf || len < terse_adacons_state_size(h))
        return TERSE_ERR_INVALID_ARG;
    if (INFLIGHT(h))
        return TERSE_ERR_BUSY;
    adacons_hdr_t hd;
    memset(&hd, 0, sizeof(hd));
    terse__ckpt_id(&hd.id, ADACONS_MAGIC, ADACONS_VERSION, h->r, h->n);
    hd.count = h->count, hd.sig = h->sig, hd.steps = h->steps, hd.fallbacks = h->fallbacks;
    hd.sum_len = terse_compressed_state_size(h->csum), hd.comb_len = terse_compressed_state_size(h->ccomb);
    hd.mu_init = h->mu_init;
    char *o = buf;
    size_t w = 0;
    memcpy(o, &hd, sizeof(hd)), w += sizeof(hd);
    memcpy(o + w, h->mu, sizeof(double) * (size_t)h->n), w += sizeof(double) * (size_t)h->n;
    terse_status_t st = TERSE_OK;
    if (h->csum)
        st = terse_compressed_save(h->csum, o + w, hd.sum_len), w += hd.sum_len;
    if (st == TERSE_OK && h->ccomb)
        st = terse_compressed_save(h->ccomb, o + w, hd.comb_len), w += hd.comb_len;
    if (st == TERSE_OK)
        terse__ckpt_seal(o, w);
    return st;
}

terse_status_t terse_adacons_load(terse_adacons_t *h, const void *buf, size_t len)
{
    if (!h || !buf)
        return TERSE_ERR_INVALID_ARG;
    if (INFLIGHT(h))
        return TERSE_ERR_BUSY;
    if (terse__ckpt_check(buf, len, ADACONS_MAGIC, ADACONS_VERSION, h->r, h->n, "adacons_load") != TERSE_OK)
        return TERSE_ERR_INVALID_ARG;
    adacons_hdr_t hd;
    memcpy(&hd, buf, sizeof(hd));
    if (len != terse_adacons_state_size(h) || hd.count != h->count || hd.sig != h->sig ||
        hd.sum_len != terse_compressed_state_size(h->csum) || hd.comb_len != terse_compressed_state_size(h->ccomb)) {
        TERSE_WARN(COLL, "adacons_load: checkpoint of another count or parameters");
        return TERSE_ERR_INVALID_ARG;
    }
    const char *in = (const char *)buf + sizeof(hd) + sizeof(double) * (size_t)h->n;
    terse_status_t st = TERSE_OK;
    if (h->csum)
        st = terse_compressed_load(h->csum, in, hd.sum_len);
    if (st == TERSE_OK && h->ccomb)
        st = terse_compressed_load(h->ccomb, in + hd.sum_len, hd.comb_len);
    if (st != TERSE_OK)
        return st;
    memcpy(h->mu, (const char *)buf + sizeof(hd), sizeof(double) * (size_t)h->n);
    h->mu_init = hd.mu_init, h->steps = hd.steps, h->fallbacks = hd.fallbacks;
    return TERSE_OK;
}
