/*
 * sasg.c - SASG as a persistent collective (../shared/docs/algorithms.md,
 * section 2). Each rank keeps its error memory e, the model at its last
 * upload, its staleness counter, and - like every rank - each peer's last
 * uploaded sparse vector and the window of the last D-1 applied update
 * norms. A step exchanges one message per rank: its new top-k list, or a
 * header-only skip. The update is recomputed from the kept lists in rank
 * order every step (no running sum to drift), so every replica holds the
 * same bits and the same threshold.
 */
#include "sparse.h"
#include "../checkpoint.h"
#include "../executor.h"
#include "../log.h"
#include "../progress.h"
#include "../params.h"
#include "../net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t k, icap, vcap;
    uint32_t *idx;
    float *val;
} kept_t;

struct terse_sasg {
    terse_comm_t *comm;
    int n, r;
    size_t len;
    terse_sasg_params_t p;
    uint64_t sig;
    terse_sparse_t *sp;
    float *e, *theta_hat, *g;
    uint32_t *tidx;
    float *tval;
    kept_t *kept;   /* [n] each rank's last upload */
    uint32_t *iota; /* 0..len-1, for uploads that came dense */
    size_t *offsets; /* per-tensor top-k: the caller's offsets, copied */
    double *win;    /* last D-1 ||update||^2, ring */
    int wn, wpos;
    uint64_t step, uploads, skips;
    int tau;
    /* the step in flight: what its end needs */
    const float *theta;
    float *update;
    int *uploaded, up;
};

void terse_sasg_params_init(terse_sasg_params_t *p)
{
    if (!p)
        return;
    memset(p, 0, sizeof(*p));
    p->struct_size = sizeof(*p);
    p->ratio = 0.01;
    p->D = 10;
    p->lr = 0.005;
    p->c = 1;
    p->sampled_topk = 1;
    p->values = TERSE_SPARSE_FP32;
}

terse_status_t terse_sasg_create(terse_comm_t *comm, size_t n, const terse_sasg_params_t *params,
                                 terse_sasg_t **out)
{
    if (!comm || !out)
        return TERSE_ERR_INVALID_ARG;
    *out = NULL;
    terse_sasg_params_t p;
    terse_sasg_params_init(&p);
    if (params)
        terse__params_copy(&p, params, sizeof(p));
    if (!(p.ratio > 0 && p.ratio <= 1) || p.D < 1 || p.D > 100000 || !(p.lr > 0) || !(p.c > 0)) {
        TERSE_WARN(COLL, "sasg_create: ratio %g (0, 1], D %d >= 1, lr %g > 0, c %g > 0 required", p.ratio, p.D,
                   p.lr, p.c);
        return TERSE_ERR_INVALID_ARG;
    }
    if (p.ntensors < 0 || (p.ntensors > 0 && (!p.offsets || p.offsets[0] != 0 || p.offsets[p.ntensors] != n))) {
        TERSE_WARN(COLL, "sasg_create: tensor offsets must start at 0, ascend and end at n = %zu", n);
        return TERSE_ERR_INVALID_ARG;
    }
    for (int t = 0; t < p.ntensors; t++)
        if (p.offsets[t + 1] <= p.offsets[t]) {
            TERSE_WARN(COLL, "sasg_create: tensor %d is empty or offsets descend", t);
            return TERSE_ERR_INVALID_ARG;
        }
    terse_sparse_params_t sp;
    terse_sparse_params_init(&sp);
    sp.values = p.values;
    sp.dense_switch = 1;
    terse_sasg_t *s = calloc(1, sizeof(*s));
    if (!s)
        return TERSE_ERR_NO_MEMORY;
    terse_status_t st = terse_sparse_create(comm, n, &sp, &s->sp);
    if (st != TERSE_OK) {
        free(s);
        return st;
    }
    s->comm = comm;
    s->n = comm->size;
    s->r = comm->rank;
    s->len = n;
    s->p = p;
    uint64_t v[4];
    memcpy(&v[0], &p.ratio, 8);
    v[1] = (uint64_t)p.D;
    memcpy(&v[2], &p.c, 8);
    v[3] = (uint64_t)p.sampled_topk;
    s->sig = terse__hash64(v, sizeof(v), 0x73617367ull);
    if (p.ntensors > 0) {
        s->offsets = malloc(((size_t)p.ntensors + 1) * sizeof(size_t));
        if (!s->offsets) {
            terse_sasg_destroy(s);
            return TERSE_ERR_NO_MEMORY;
        }
        memcpy(s->offsets, p.offsets, ((size_t)p.ntensors + 1) * sizeof(size_t));
        s->p.offsets = s->offsets;
        s->sig = terse__hash64(s->offsets, ((size_t)p.ntensors + 1) * sizeof(size_t), s->sig);
    }
    size_t k = 0;
    if (p.ntensors > 0)
        for (int t = 0; t < p.ntensors; t++)
            k += terse_topk_count(p.offsets[t + 1] - p.offsets[t], p.ratio);
    else
        k = terse_topk_count(n, p.ratio);
    s->e = calloc(n, sizeof(float));
    s->theta_hat = calloc(n, sizeof(float));
    s->g = calloc(n, sizeof(float));
    s->tidx = calloc(k ? k : 1, sizeof(uint32_t));
    s->tval = calloc(k ? k : 1, sizeof(float));
    s->kept = calloc((size_t)s->n, sizeof(kept_t));
    s->win = calloc((size_t)p.D, sizeof(double));
    if (!s->e || !s->theta_hat || !s->g || !s->tidx || !s->tval || !s->kept || !s->win) {
        terse_sasg_destroy(s);
        return TERSE_ERR_NO_MEMORY;
    }
    s->tau = 1;
    *out = s;
    return TERSE_OK;
}

void terse_sasg_destroy(terse_sasg_t *s)
{
    if (!s)
        return;
    terse_sparse_destroy(s->sp); /* first: a step in flight ends in this handle */
    for (int i = 0; s->kept && i < s->n; i++)
        free(s->kept[i].idx), free(s->kept[i].val);
    free(s->iota);
    free(s->offsets);
    free(s->e), free(s->theta_hat), free(s->g), free(s->tidx), free(s->tval), free(s->kept), free(s->win);
    free(s);
}

int terse_sasg_need_change(const terse_sasg_t *s)
{
    return s && !(s->step < (uint64_t)s->p.D || s->tau > s->p.D);
}

const float *terse_sasg_stale_point(const terse_sasg_t *s)
{
    return s ? s->theta_hat : NULL;
}

double terse_sasg_threshold(const terse_sasg_t *s)
{
    if (!s)
        return 0;
    double sum = 0;
    for (int j = 0; j < s->wn; j++) /* oldest first: a fixed order on every rank */
        sum += s->win[(s->wpos + s->p.D - 1 - s->wn + j) % (s->p.D - 1 > 0 ? s->p.D - 1 : 1)];
    return sum / (s->p.c * s->p.lr * (double)s->n * (double)s->n);
}

terse_status_t terse_sasg_set_lr(terse_sasg_t *s, double lr)
{
    if (!s || !(lr > 0) || !isfinite(lr))
        return TERSE_ERR_INVALID_ARG;
    s->p.lr = lr;
    return TERSE_OK;
}

/* Room for k pairs; the kept list itself is unchanged (so a step that runs
 * out of memory half way leaves every list as it was). */
static int reserve(kept_t *kp, size_t k)
{
    if (k > kp->icap) {
        uint32_t *i2 = realloc(kp->idx, k * sizeof(uint32_t));
        if (!i2)
            return -1;
        kp->idx = i2, kp->icap = k;
    }
    if (k > kp->vcap) {
        float *v2 = realloc(kp->val, k * sizeof(float));
        if (!v2)
            return -1;
        kp->val = v2, kp->vcap = k;
    }
    return 0;
}

static int keep(kept_t *kp, const uint32_t *idx, const float *val, size_t k)
{
    if (reserve(kp, k))
        return -1;
    memcpy(kp->idx, idx, k * sizeof(uint32_t));
    memcpy(kp->val, val, k * sizeof(float));
    kp->k = k;
    return 0;
}

static terse_status_t sasg_finish(void *arg, terse_status_t st);

terse_status_t terse_sasg_step_start(terse_sasg_t *s, const float *theta, const float *grad, double change_sq,
                                     float *update, int *uploaded, terse_request_t **req)
{
    if (!s || !theta || !grad || !update)
        return TERSE_ERR_INVALID_ARG;
    if (INFLIGHT(s->sp)) {
        TERSE_WARN(COLL, "sasg_step: a step of this handle is in flight (wait for it first)");
        return TERSE_ERR_BUSY;
    }
    s->theta = theta, s->update = update, s->uploaded = uploaded;
    int need = terse_sasg_need_change(s);
    int up = !need || change_sq > terse_sasg_threshold(s);
    int bad = need && !(change_sq >= 0); /* NaN or negative; +inf forces an upload */
    size_t k = 0;
    terse_status_t st;
    if (bad) {
        TERSE_WARN(COLL, "sasg_step: change_sq %g must be >= 0 at this step", change_sq);
        st = terse__sparse_exchange_start(s->sp, s->sig, TERSE_SPMSG_POISON, NULL, NULL, 0, 0, TERSE_SP_RAW, req);
        return st == TERSE_OK && !req ? TERSE_ERR_INVALID_ARG : st;
    }
    s->up = up;
    if (up) {
        float lr = (float)s->p.lr;
        for (size_t i = 0; i < s->len; i++)
            s->g[i] = lr * grad[i] + s->e[i];
        if (s->p.ntensors > 0) {
            st = terse_topk_select_bucket(s->g, s->offsets, s->p.ntensors, s->p.ratio, s->p.sampled_topk,
                                          s->tidx, &k);
        } else {
            k = terse_topk_count(s->len, s->p.ratio);
            st = s->p.sampled_topk ? terse__topk_sampled(s->g, s->len, k, s->tidx)
                                   : terse__topk_exact(s->g, s->len, k, s->tidx);
        }
        if (st != TERSE_OK)
            return st;
        for (size_t j = 0; j < k; j++)
            s->tval[j] = s->g[s->tidx[j]];
        /* dense when the list would be larger (k near n: the skip rule with dense uploads) */
        s->sp->then = sasg_finish, s->sp->then_arg = s;
        st = terse__sparse_exchange_start(s->sp, s->sig, TERSE_SPMSG_LIST, s->tidx, s->tval, k, 1, TERSE_SP_RAW, req);
    } else {
        s->sp->then = sasg_finish, s->sp->then_arg = s;
        st = terse__sparse_exchange_start(s->sp, s->sig, TERSE_SPMSG_SKIP, NULL, NULL, 0, 0, TERSE_SP_RAW, req);
    }
    return st;
}

/* The exchange ended: everyone's lists, the error memory, the model copy,
 * the update and the window - all or nothing. */
static terse_status_t sasg_finish(void *arg, terse_status_t st)
{
    terse_sasg_t *s = arg;
    const float *theta = s->theta;
    float *update = s->update;
    int *uploaded = s->uploaded, up = s->up;
    if (st != TERSE_OK)
        return st;
    /* everyone's lists; a skip keeps the last one, which must exist. Checks
     * and allocations first, then the lists change (all or none). */
    for (int i = 0; i < s->n; i++) {
        const terse_sparse_part_t *pt = &s->sp->parts[i];
        if (pt->kind == TERSE_SPMSG_SKIP && s->step < (uint64_t)s->p.D) {
            terse__exec_fail(s->comm, TERSE_ERR_MISMATCH, i, s->comm->next_seq, 1,
                             "sasg: rank %d skipped during the warm-up (step %llu < D = %d): ranks "
                             "disagree on the SASG state", i, (unsigned long long)s->step, s->p.D);
            return TERSE_ERR_MISMATCH;
        }
        if (pt->kind == TERSE_SPMSG_DENSE && !s->iota) {
            /* a dense upload is kept as the list of every position */
            if (!(s->iota = malloc(s->len * sizeof(uint32_t))))
                return TERSE_ERR_NO_MEMORY;
            for (size_t j = 0; j < s->len; j++)
                s->iota[j] = (uint32_t)j;
        }
        if ((pt->kind == TERSE_SPMSG_LIST || pt->kind == TERSE_SPMSG_DENSE) && reserve(&s->kept[i], pt->k))
            return TERSE_ERR_NO_MEMORY;
    }
    for (int i = 0; i < s->n; i++) {
        const terse_sparse_part_t *pt = &s->sp->parts[i];
        if (pt->kind == TERSE_SPMSG_LIST || pt->kind == TERSE_SPMSG_DENSE)
            keep(&s->kept[i], pt->kind == TERSE_SPMSG_DENSE ? s->iota : pt->idx, pt->val, pt->k);
    }
    if (up) {
        /* error memory: what the top-k left out (after value coding) */
        const kept_t *own = &s->kept[s->r];
        for (size_t j = 0; j < own->k; j++)
            s->g[own->idx[j]] -= own->val[j];
        memcpy(s->e, s->g, s->len * sizeof(float));
        memcpy(s->theta_hat, theta, s->len * sizeof(float));
        s->tau = 1;
        s->uploads++;
    } else {
        s->tau++;
        s->skips++;
    }
    memset(update, 0, s->len * sizeof(float));
    for (int i = 0; i < s->n; i++)
        for (size_t j = 0; j < s->kept[i].k; j++)
            update[s->kept[i].idx[j]] += s->kept[i].val[j];
    double nrm = 0;
    for (size_t i = 0; i < s->len; i++)
        nrm += (double)update[i] * update[i];
    if (s->p.D > 1) {
        s->win[s->wpos] = nrm;
        s->wpos = (s->wpos + 1) % (s->p.D - 1);
        if (s->wn < s->p.D - 1)
            s->wn++;
    }
    s->step++;
    if (uploaded)
        *uploaded = up;
    return TERSE_OK;
}

terse_status_t terse_sasg_step(terse_sasg_t *s, const float *theta, const float *grad, double change_sq,
                               float *update, int *uploaded)
{
    return terse_sasg_step_start(s, theta, grad, change_sq, update, uploaded, NULL);
}

terse_status_t terse_sasg_step_grads(terse_sasg_t *s, const float *theta, const float *grad,
                                     const float *grad_stale, float *update, int *uploaded)
{
    if (!s || !grad)
        return terse_sasg_step(s, theta, grad, -1, update, uploaded);
    double change = -1;
    if (terse_sasg_need_change(s)) {
        if (!grad_stale) {
            TERSE_WARN(COLL, "sasg_step_grads: this step needs the stale gradient");
            change = NAN; /* every rank fails together */
        } else {
            change = 0;
            for (size_t i = 0; i < s->len; i++) {
                double d = (double)(grad[i] - grad_stale[i]);
                change += d * d;
            }
        }
    }
    return terse_sasg_step(s, theta, grad, change, update, uploaded);
}

terse_status_t terse_sasg_stats(const terse_sasg_t *s, terse_sasg_stats_t *stats)
{
    if (!s || !stats)
        return TERSE_ERR_INVALID_ARG;
    terse__ctx_lock(s->sp->comm->ctx);
    *stats = (terse_sasg_stats_t){s->step, s->uploads, s->skips, s->sp->bytes_sent};
    terse__ctx_unlock(s->sp->comm->ctx);
    return TERSE_OK;
}

/* ---- checkpoint ----------------------------------------------------------
 * "TRSESASG", u32 version, rank, size, D, u64 len, signature, step, uploads,
 * skips, f64 lr, i32 tau, wn, wpos, 0, f64 win[D], u64 rng seed and counter,
 * sparse calls and bytes, f32 e[len], theta_hat[len], then per rank u64 k,
 * u32 idx[k], f32 val[k]; u64 hash of everything before.
 */
#define SASG_MAGIC "TRSESASG"

#define SASG_VERSION 2u

typedef struct {
    terse_ckpt_id_t id; /* checkpoint.h's frame */
    uint32_t D, pad;
    uint64_t len, sig, step, uploads, skips;
    double lr;
    int32_t tau, wn, wpos, pad2;
    uint64_t rng[2], calls, bytes;
} sasg_hdr_t;

size_t terse_sasg_state_size(const terse_sasg_t *s)
{
    if (!s)
        return 0;
    size_t sz = sizeof(sasg_hdr_t) + (size_t)s->p.D * sizeof(double) + 2 * s->len * sizeof(float) + TERSE_CKPT_TRAILER;
    for (int i = 0; i < s->n; i++)
        sz += 8 + s->kept[i].k * 8;
    return sz;
}

terse_status_t terse_sasg_save(const terse_sasg_t *s, void *buf, size_t len)
{
    if (!s || !buf || len < terse_sasg_state_size(s))
        return TERSE_ERR_INVALID_ARG;
    sasg_hdr_t h;
    memset(&h, 0, sizeof(h));
    terse__ckpt_id(&h.id, SASG_MAGIC, SASG_VERSION, s->r, s->n);
    h.D = (uint32_t)s->p.D;
    h.len = s->len, h.sig = s->sig, h.step = s->step, h.uploads = s->uploads, h.skips = s->skips;
    h.lr = s->p.lr, h.tau = s->tau, h.wn = s->wn, h.wpos = s->wpos;
    h.rng[0] = s->sp->rng.seed, h.rng[1] = s->sp->rng.counter, h.calls = s->sp->calls, h.bytes = s->sp->bytes_sent;
    char *o = buf;
    size_t w = 0;
#define PUT(p, n) (memcpy(o + w, (p), (n)), w += (n))
    PUT(&h, sizeof(h));
    PUT(s->win, (size_t)s->p.D * sizeof(double));
    PUT(s->e, s->len * sizeof(float));
    PUT(s->theta_hat, s->len * sizeof(float));
    for (int i = 0; i < s->n; i++) {
        uint64_t k = s->kept[i].k;
        PUT(&k, 8);
        PUT(s->kept[i].idx, k * 4);
        PUT(s->kept[i].val, k * 4);
    }
    terse__ckpt_seal(o, w);
#undef PUT
    return TERSE_OK;
}

terse_status_t terse_sasg_load(terse_sasg_t *s, const void *buf, size_t len)
{
    if (!s || !buf)
        return TERSE_ERR_INVALID_ARG;
    const char *in = buf;
    sasg_hdr_t h;
    size_t fixed = sizeof(h) + (size_t)s->p.D * sizeof(double) + 2 * s->len * sizeof(float);
    if (terse__ckpt_check(buf, len, SASG_MAGIC, SASG_VERSION, s->r, s->n, "sasg_load") != TERSE_OK)
        return TERSE_ERR_INVALID_ARG;
    if (len < fixed + TERSE_CKPT_TRAILER || (memcpy(&h, in, sizeof(h)), h.D != (uint32_t)s->p.D) || h.len != s->len ||
        h.sig != s->sig) {
        TERSE_WARN(COLL, "sasg_load: checkpoint of another length or parameters");
        return TERSE_ERR_INVALID_ARG;
    }
    /* walk the per-rank lists before changing anything */
    size_t r = fixed;
    for (int i = 0; i < s->n; i++) {
        uint64_t k;
        if (r + 8 > len - 8)
            return TERSE_ERR_INVALID_ARG;
        memcpy(&k, in + r, 8);
        if (k > s->len || r + 8 + k * 8 > len - 8)
            return TERSE_ERR_INVALID_ARG;
        for (uint64_t j = 0; j < k; j++) {
            uint32_t ix;
            memcpy(&ix, in + r + 8 + j * 4, 4);
            if (ix >= s->len)
                return TERSE_ERR_INVALID_ARG;
        }
        if (reserve(&s->kept[i], (size_t)k)) /* before anything changes */
            return TERSE_ERR_NO_MEMORY;
        r += 8 + k * 8;
    }
    if (r != len - 8)
        return TERSE_ERR_INVALID_ARG;
    r = sizeof(h);
    memcpy(s->win, in + r, (size_t)s->p.D * sizeof(double));
    r += (size_t)s->p.D * sizeof(double);
    memcpy(s->e, in + r, s->len * sizeof(float));
    r += s->len * sizeof(float);
    memcpy(s->theta_hat, in + r, s->len * sizeof(float));
    r += s->len * sizeof(float);
    for (int i = 0; i < s->n; i++) {
        uint64_t k;
        memcpy(&k, in + r, 8);
        keep(&s->kept[i], (const uint32_t *)(const void *)(in + r + 8), (const float *)(const void *)(in + r + 8 + k * 4), k);
        r += 8 + k * 8;
    }
    s->step = h.step, s->uploads = h.uploads, s->skips = h.skips, s->p.lr = h.lr;
    s->tau = h.tau, s->wn = h.wn, s->wpos = h.wpos;
    s->sp->rng = (terse_rng_t){h.rng[0], h.rng[1]};
    s->sp->calls = h.calls, s->sp->bytes_sent = h.bytes;
    return TERSE_OK;
}
