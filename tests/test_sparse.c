/*
 * test_sparse.c - sparse allgather, top-k selection and SASG over 1-8 ranks:
 * lists and dense sums against a reference every rank can compute (inputs
 * are a function of rank and round), k = 0 on some and on all ranks,
 * unsorted input with duplicates, the dense switch, the three value formats,
 * bit-identical results, invalid input (k > n, index out of range, NaN) as
 * an error on every rank with the communicator still usable; sampled top-k
 * equal to exact; SASG warm-up, identical thresholds, skips that reuse the
 * stale contribution exactly, forced refresh after D skips, error-memory
 * conservation, checkpoint and resume. Transports: TERSE_TEST_TRANSPORTS.
 */
#include "launcher.h"
#include "sparse/sparse.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *g_transport = "tcp";
static const int rank_counts[] = {1, 2, 3, 4, 5, 8};
#define NRC (int)(sizeof(rank_counts) / sizeof(rank_counts[0]))
#define CASE_TIMEOUT 300.0

static terse_status_t make_comm(const terse_launch_ctx_t *ctx, terse_comm_t **comm)
{
    return test_comm_over(ctx, g_transport, comm);
}


static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

/* Rank r's input in round t: k pairs, unsorted, with duplicates; values are
 * multiples of 1/4 (exact in fp16 and in every sum here), or powers of two
 * for C_nat (exact there). k = 0 for some ranks, and for all in round 2. */
static size_t make_input(int r, int t, size_t n, int cnat, uint32_t *idx, float *val)
{
    uint64_t s = 0x1234567ull + (uint64_t)r * 7919 + (uint64_t)t * 104729;
    size_t k = t == 2 || (r + t) % 3 == 1 ? 0 : (size_t)(lcg(&s) % (n / 8 + 1));
    if (t == 4 && r == 0)
        k = n; /* dense: above the break-even point */
    for (size_t i = 0; i < k; i++) {
        idx[i] = (uint32_t)(lcg(&s) % n);
        if (i > 0 && lcg(&s) % 5 == 0)
            idx[i] = idx[i - 1]; /* a duplicate */
        int m = (int)(lcg(&s) % 64) - 32;
        val[i] = cnat ? (m < 0 ? -1.0f : 1.0f) * ldexpf(1.0f, m % 8) : (float)m / 4.0f;
    }
    return k;
}

static int body_sparse(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
    size_t n = 5003;
    uint32_t *idx = malloc(n * 4), *ridx = malloc(n * 4);
    float *val = malloc(n * 4), *rval = malloc(n * 4), *out = malloc(n * 4), *ref = malloc(n * 4);
    for (int fmt = TERSE_SPARSE_FP32; fmt <= TERSE_SPARSE_CNAT8; fmt++) {
        terse_sparse_params_t p;
        terse_sparse_params_init(&p);
        p.values = (terse_sparse_values_t)fmt;
        terse_sparse_t *s;
        RCHECK(ctx, terse_sparse_create(comm, n, &p, &s) == TERSE_OK, "create");
        for (int t = 0; t < 6; t++) {
            size_t k = make_input(ctx->rank, t, n, fmt == TERSE_SPARSE_CNAT8, idx, val);
            terse_sparse_list_t L;
            terse_comm_stats_t c0, c1;
            terse_comm_stats(comm, &c0);
            terse_status_t st = terse_sparse_allgather(s, idx, val, k, &L);
            RCHECK(ctx, st == TERSE_OK, "allgather: %s", terse_strerror(st));
            /* the message goes out of registered memory: zero-copy on verbs */
            terse_comm_stats(comm, &c1);
            RCHECK(ctx, c1.reg_misses == c0.reg_misses && (ctx->size == 1 || c1.reg_hits > c0.reg_hits),
                   "allgather sent %llu chunks from unregistered memory",
                   (unsigned long long)(c1.reg_misses - c0.reg_misses));
            size_t total = 0;
            for (int r = 0; r < ctx->size; r++) {
                size_t kr = make_input(r, t, n, fmt == TERSE_SPARSE_CNAT8, ridx, rval);
                RCHECK(ctx, L.counts[r] == kr && L.offsets[r] == total, "fmt %d round %d rank %d: %zu pairs, want %zu",
                       fmt, t, r, L.counts[r], kr);
                /* the rank's pairs sorted by index, stable */
                for (size_t a = 1; a < kr; a++)
                    for (size_t b = a; b > 0 && ridx[b - 1] > ridx[b]; b--) {
                        uint32_t ti = ridx[b]; ridx[b] = ridx[b - 1]; ridx[b - 1] = ti;
                        float tv = rval[b]; rval[b] = rval[b - 1]; rval[b - 1] = tv;
                    }
                for (size_t j = 0; j < kr; j++)
                    RCHECK(ctx, L.idx[total + j] == ridx[j] && L.val[total + j] == rval[j],
                           "fmt %d round %d rank %d pair %zu: (%u, %g) want (%u, %g)", fmt, t, r, j,
                           L.idx[total + j], L.val[total + j], ridx[j], rval[j]);
                total += kr;
            }
            RCHECK(ctx, L.total == total, "total");
            /* accumulate mode against the dense reference */
            st = terse_sparse_allreduce(s, idx, val, k, out);
            RCHECK(ctx, st == TERSE_OK, "allreduce: %s", terse_strerror(st));
            memset(ref, 0, n * 4);
            for (int r = 0; r < ctx->size; r++) {
                size_t kr = make_input(r, t, n, fmt == TERSE_SPARSE_CNAT8, ridx, rval);
                for (size_t j = 0; j < kr; j++)
                    ref[ridx[j]] += rval[j];
            }
            /* (rank 0's dense round under C_nat re-rounds its summed duplicates: not exact) */
            if (!(fmt == TERSE_SPARSE_CNAT8 && t == 4))
                RCHECK(ctx, memcmp(out, ref, n * 4) == 0, "fmt %d round %d: dense sum differs", fmt, t);
            RCHECK(ctx, test_same_everywhere(comm, out, n * 4), "outputs differ across ranks");
        }
        terse_sparse_stats_t ss;
        terse_sparse_stats(s, &ss);
        RCHECK(ctx, ss.calls == 12, "calls %llu", (unsigned long long)ss.calls);
        RCHECK(ctx, ctx->rank != 0 || ss.dense_sends >= 1, "rank 0 never switched to dense");
        terse_sparse_destroy(s);
    }
    free(idx), free(ridx), free(val), free(rval), free(out), free(ref);
    terse_comm_destroy(comm);
    return 0;
}

static int body_sparse_errors(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
    size_t n = 100;
    terse_sparse_t *s;
    RCHECK(ctx, terse_sparse_create(comm, 0, NULL, &s) == TERSE_ERR_INVALID_ARG, "n = 0 accepted");
    RCHECK(ctx, terse_sparse_create(comm, n, NULL, &s) == TERSE_OK, "create");
    uint32_t idx[128];
    float val[128], out[100];
    for (int i = 0; i < 128; i++)
        idx[i] = (uint32_t)(i % 100), val[i] = 1;
    for (int bad = 0; bad < 3; bad++) {
        size_t k = 10;
        uint32_t keep_i = idx[3];
        float keep_v = val[3];
        int me = ctx->rank == ctx->size - 1;
        if (me && bad == 0)
            k = 101; /* k > n */
        if (me && bad == 1)
            idx[3] = 100; /* out of range */
        if (me && bad == 2)
            val[3] = NAN;
        terse_status_t st = terse_sparse_allreduce(s, idx, val, k, out);
        RCHECK(ctx, st == TERSE_ERR_INVALID_ARG, "case %d: %s", bad, terse_strerror(st));
        terse_sparse_list_t L;
        st = terse_sparse_allgather(s, idx, val, k, &L);
        RCHECK(ctx, st == TERSE_ERR_INVALID_ARG, "case %d (gather): %s", bad, terse_strerror(st));
        idx[3] = keep_i, val[3] = keep_v;
        /* the communicator is still usable */
        st = terse_sparse_allreduce(s, idx, val, 10, out);
        RCHECK(ctx, st == TERSE_OK && out[5] == (float)ctx->size, "after case %d: %s", bad, terse_strerror(st));
    }
    terse_sparse_destroy(s);
    terse_comm_destroy(comm);
    return 0;
}

static int body_sasg(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
    size_t n = 3001;
    int D = 3;
    terse_sasg_params_t p;
    terse_sasg_params_init(&p);
    p.D = D;
    p.lr = 0.5; /* a power of two: lr * grad + e stays exact with dyadic gradients */
    p.ratio = 0.05;
    terse_sasg_t *s;
    RCHECK(ctx, terse_sasg_create(comm, n, &p, &s) == TERSE_OK, "create");
    float *theta = calloc(n, 4), *grad = malloc(n * 4), *upd = malloc(n * 4), *prev = malloc(n * 4);
    double norms[64];
    int step = 0, uploaded;
    uint64_t seed = 99 + (uint64_t)ctx->rank;
    char *ck = NULL;
    size_t cklen = 0;
    float *after_ck = malloc(4 * n * 4);
    for (; step < 16; step++) {
        for (size_t i = 0; i < n; i++)
            grad[i] = (float)((int)(lcg(&seed) % 257) - 128) / 64.0f;
        int need = terse_sasg_need_change(s);
        double thr = terse_sasg_threshold(s);
        /* the threshold is the same everywhere and follows the formula */
        RCHECK(ctx, test_same_everywhere(comm, &thr, sizeof(thr)), "step %d: thresholds differ", step);
        if (step >= D) {
            double want = 0;
            for (int j = step - (D - 1); j < step; j++)
                want += norms[j];
            want /= p.c * p.lr * ctx->size * ctx->size;
            RCHECK(ctx, thr == want, "step %d: threshold %.17g, formula %.17g", step, thr, want);
        }
        /* upload at 3 (change above any threshold), skip after that except when
         * D skips in a row force a refresh: steps 7, 11, 15 */
        RCHECK(ctx, need == !(step < D || (step > 3 && (step - 3) % (D + 1) == 0)),
               "step %d: need_change %d", step, need);
        /* warm-up uploads; then steps 4..: change 0 (skip) except where forced */
        double change = step == 3 ? 1e30 : 0;
        memcpy(prev, upd, n * 4);
        terse_status_t st = terse_sasg_step(s, theta, grad, need ? change : -1, upd, &uploaded);
        RCHECK(ctx, st == TERSE_OK, "step %d: %s", step, terse_strerror(st));
        RCHECK(ctx, uploaded == (step < D || step == 3 || !need), "step %d: uploaded %d", step, uploaded);
        RCHECK(ctx, test_same_everywhere(comm, upd, n * 4), "step %d: updates differ", step);
        if (!uploaded) /* everyone skipped: the stale contributions, reused exactly */
            RCHECK(ctx, memcmp(upd, prev, n * 4) == 0, "step %d: skip changed the update", step);
        norms[step] = 0;
        for (size_t i = 0; i < n; i++)
            norms[step] += (double)upd[i] * upd[i];
        for (size_t i = 0; i < n; i++)
            theta[i] -= upd[i];
        if (step == 9) {
            cklen = terse_sasg_state_size(s);
            ck = malloc(cklen);
            RCHECK(ctx, terse_sasg_save(s, ck, cklen) == TERSE_OK, "save");
        }
        if (step >= 10 && step < 14)
            memcpy(after_ck + (size_t)(step - 10) * n, upd, n * 4);
    }
    terse_sasg_stats_t ss;
    terse_sasg_stats(s, &ss);
    RCHECK(ctx, ss.steps == 16 && ss.uploads + ss.skips == 16 && ss.uploads == (uint64_t)D + 4, "uploads %llu skips %llu",
           (unsigned long long)ss.uploads, (unsigned long long)ss.skips);
    /* invalid change_sq: every rank fails, nothing changes */
    if (terse_sasg_need_change(s)) {
        terse_status_t st = terse_sasg_step(s, theta, grad, ctx->rank == 0 ? -1.0 : 0.0, upd, &uploaded);
        RCHECK(ctx, st == TERSE_ERR_INVALID_ARG, "negative change: %s", terse_strerror(st));
        terse_sasg_stats(s, &ss);
        RCHECK(ctx, ss.steps == 16, "failed step counted");
    }
    terse_sasg_destroy(s);
    /* resume from the step-9 checkpoint: steps 10..13 again, bit for bit */
    terse_sasg_t *r;
    RCHECK(ctx, terse_sasg_create(comm, n, &p, &r) == TERSE_OK, "create");
    RCHECK(ctx, terse_sasg_load(r, ck, cklen) == TERSE_OK, "load");
    ck[cklen / 3] ^= 4;
    RCHECK(ctx, terse_sasg_load(r, ck, cklen) == TERSE_ERR_INVALID_ARG, "corrupt checkpoint accepted");
    ck[cklen / 3] ^= 4;
    seed = 99 + (uint64_t)ctx->rank;
    memset(theta, 0, n * 4);
    for (step = 0; step < 14; step++) {
        for (size_t i = 0; i < n; i++)
            grad[i] = (float)((int)(lcg(&seed) % 257) - 128) / 64.0f;
        if (step < 10)
            continue;
        int need = terse_sasg_need_change(r);
        RCHECK(ctx, terse_sasg_step(r, theta, grad, need ? 0 : -1, upd, &uploaded) == TERSE_OK, "resumed step");
        RCHECK(ctx, memcmp(upd, after_ck + (size_t)(step - 10) * n, n * 4) == 0, "step %d differs after resume", step);
    }
    terse_sasg_destroy(r);
    /* both gradients instead of the scalar: equal ones skip, far ones upload,
     * a missing stale gradient fails on every rank */
    RCHECK(ctx, terse_sasg_create(comm, n, &p, &r) == TERSE_OK, "create");
    for (step = 0; step < D; step++)
        RCHECK(ctx, terse_sasg_step_grads(r, theta, grad, NULL, upd, &uploaded) == TERSE_OK && uploaded,
               "warm-up with grads");
    RCHECK(ctx, terse_sasg_need_change(r), "change wanted after the warm-up");
    RCHECK(ctx, terse_sasg_step_grads(r, theta, grad, grad, upd, &uploaded) == TERSE_OK && !uploaded,
           "equal gradients uploaded");
    memcpy(prev, grad, n * 4);
    prev[n / 2] += 1e6f;
    RCHECK(ctx, terse_sasg_step_grads(r, theta, grad, prev, upd, &uploaded) == TERSE_OK && uploaded,
           "far gradients skipped");
    if (terse_sasg_need_change(r)) {
        terse_status_t st = terse_sasg_step_grads(r, theta, grad, ctx->rank == 0 ? NULL : grad, upd, &uploaded);
        RCHECK(ctx, st == TERSE_ERR_INVALID_ARG, "missing stale gradient: %s", terse_strerror(st));
    }
    terse_sasg_destroy(r);
    /* k = n: uploads travel dense; the update is exactly the sum of lr x grad */
    p.ratio = 1.0;
    RCHECK(ctx, terse_sasg_create(comm, n, &p, &r) == TERSE_OK, "create dense");
    for (size_t i = 0; i < n; i++)
        grad[i] = (float)((int)((i * 7 + (size_t)ctx->rank * 13) % 61) - 30) / 8.0f;
    RCHECK(ctx, terse_sasg_step(r, theta, grad, -1, upd, &uploaded) == TERSE_OK && uploaded, "dense step");
    for (size_t i = 0; i < n; i++) {
        float want = 0;
        for (int q = 0; q < ctx->size; q++)
            want += 0.5f * ((float)((int)((i * 7 + (size_t)q * 13) % 61) - 30) / 8.0f);
        RCHECK(ctx, upd[i] == want, "dense upload [%zu]: %g want %g", i, upd[i], want);
    }
    terse_sasg_destroy(r);
    /* per-tensor top-k: a tensor of tiny values still gets its share */
    size_t offs[3] = {0, n - 100, n}, bad_offs[3] = {0, n + 1, n};
    p.ratio = 0.05;
    p.ntensors = 2;
    p.offsets = bad_offs;
    RCHECK(ctx, terse_sasg_create(comm, n, &p, &r) == TERSE_ERR_INVALID_ARG, "bad offsets accepted");
    p.offsets = offs;
    RCHECK(ctx, terse_sasg_create(comm, n, &p, &r) == TERSE_OK, "create per tensor");
    for (size_t i = 0; i < n; i++)
        grad[i] = i < n - 100 ? 1.0f + (float)(i % 7) : 1e-3f * (float)(1 + i % 5);
    RCHECK(ctx, terse_sasg_step(r, theta, grad, -1, upd, &uploaded) == TERSE_OK && uploaded, "per-tensor step");
    int small = 0, big = 0;
    for (size_t i = 0; i < n; i++)
        *(i < n - 100 ? &big : &small) += upd[i] != 0;
    RCHECK(ctx, small == 5 && big == (int)terse_topk_count(n - 100, 0.05), "kept %d + %d", big, small);
    terse_sasg_destroy(r);
    free(theta), free(grad), free(upd), free(prev), free(ck), free(after_ck);
    terse_comm_destroy(comm);
    return 0;
}

/* Mutated messages (bit flips, truncation, extension, random bytes) are
 * either refused or decode to in-range indices and finite values: never a
 * crash or a read past the end. Valid messages from every value format and
 * kind are the seeds. */
static void test_decode_fuzz(void)
{
    /* tcp: this process forks the ranks of later cases, and a verbs device
     * opened before fork() would break their registrations */
    terse_comm_params_t cp = {.rank = 0, .size = 1, .root_addr = "127.0.0.1:0", .secret = "fuzz",
                              .transport = "tcp"};
    terse_comm_t *comm;
    CU_ASSERT_EQUAL_FATAL(terse_comm_create(&cp, &comm), TERSE_OK);
    size_t n = 777;
    uint32_t idx[777];
    float val[777];
    uint64_t seed = 7;
    int refused = 0, accepted = 0, bad = 0;
    for (int fmt = TERSE_SPARSE_FP32; fmt <= TERSE_SPARSE_CNAT8; fmt++) {
        terse_sparse_params_t p;
        terse_sparse_params_init(&p);
        p.values = (terse_sparse_values_t)fmt;
        terse_sparse_t *s;
        CU_ASSERT_EQUAL_FATAL(terse_sparse_create(comm, n, &p, &s), TERSE_OK);
        for (int kind = 0; kind < 3; kind++) {
            size_t k = kind == 0 ? 0 : kind == 1 ? 40 : n; /* empty, list, dense */
            for (size_t j = 0; j < k; j++)
                idx[j] = (uint32_t)((j * 19) % n), val[j] = (float)j - 20.5f;
            terse_sparse_list_t L;
            CU_ASSERT_EQUAL_FATAL(terse_sparse_allgather(s, idx, val, k, &L), TERSE_OK);
            size_t len = s->msg_len, cap = len + 64;
            unsigned char *orig = malloc(len), *m = malloc(cap);
            memcpy(orig, s->msg, len);
            CU_ASSERT_EQUAL(terse__sparse_decode(s, 0, orig, len), 0);
            for (int t = 0; t < 20000; t++) {
                size_t ml = len;
                memcpy(m, orig, len);
                switch (lcg(&seed) % 4) {
                case 0: /* a few bit flips */
                    for (int f = 0, nf = 1 + (int)(lcg(&seed) % 3); f < nf; f++)
                        m[lcg(&seed) % len] ^= (unsigned char)(1u << (lcg(&seed) % 8));
                    break;
                case 1: /* truncated */
                    ml = (size_t)(lcg(&seed) % len);
                    break;
                case 2: /* extended by garbage */
                    ml = len + 1 + (size_t)(lcg(&seed) % 63);
                    for (size_t j = len; j < ml; j++)
                        m[j] = (unsigned char)lcg(&seed);
                    break;
                default: /* random bytes after a valid header */
                    for (size_t j = sizeof(terse_sparse_msg_hdr_t); j < len; j++)
                        m[j] = (unsigned char)lcg(&seed);
                }
                unsigned char *exact = malloc(ml ? ml : 1); /* sized exactly: overreads hit the end */
                memcpy(exact, m, ml);
                if (terse__sparse_decode(s, 0, exact, ml)) {
                    refused++;
                } else {
                    accepted++;
                    const terse_sparse_part_t *pt = &s->parts[0];
                    for (size_t j = 0; j < pt->k; j++)
                        bad += (pt->kind == TERSE_SPMSG_LIST && pt->idx[j] >= n) || !isfinite(pt->val[j]);
                }
                free(exact);
            }
            free(orig), free(m);
        }
        terse_sparse_destroy(s);
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(refused > 100000); /* most mutations are caught */
    printf(" [%d refused, %d accepted] ", refused, accepted);
    terse_comm_destroy(comm);
}

/* Sampled top-k selects exactly what the exact selection does. */
static void test_topk_select(void)
{
    size_t sizes[] = {10, 8191, 100003, 1000003};
    for (int t = 0; t < 4; t++) {
        size_t n = sizes[t];
        float *x = malloc(n * 4);
        uint64_t s = 5 + (uint64_t)t;
        for (size_t i = 0; i < n; i++)
            x[i] = (float)((int)(lcg(&s) % 2001) - 1000) / 7.0f; /* many ties */
        for (int kk = 0; kk < 3; kk++) {
            size_t k = kk == 0 ? 1 : kk == 1 ? terse_topk_count(n, 0.01) : n;
            uint32_t *a = malloc(k * 4), *b = malloc(k * 4);
            CU_ASSERT_EQUAL_FATAL(terse_topk_select(x, n, k, 0, a), TERSE_OK);
            CU_ASSERT_EQUAL_FATAL(terse_topk_select(x, n, k, 1, b), TERSE_OK);
            CU_ASSERT_EQUAL(memcmp(a, b, k * 4), 0);
            /* ascending, and nothing left out is larger than anything kept */
            float minkept = INFINITY;
            char *in = calloc(n, 1);
            for (size_t j = 0; j < k; j++) {
                if (j)
                    CU_ASSERT(a[j - 1] < a[j]);
                in[a[j]] = 1;
                minkept = fminf(minkept, fabsf(x[a[j]]));
            }
            int bad = 0;
            for (size_t i = 0; i < n; i++)
                bad += !in[i] && fabsf(x[i]) > minkept;
            CU_ASSERT_EQUAL(bad, 0);
            free(a), free(b), free(in);
        }
        free(x);
    }
    /* the codec's fused form (p = u + e, checked, filtered in one pass) on
     * continuous values, a handful of distinct values (ties at the sampled
     * threshold) and constant input; NaN and infinity refused */
    for (int kind = 0; kind < 3; kind++)
        for (int with_e = 0; with_e < 2; with_e++) {
            size_t n = 1000003, k = terse_topk_count(n, 0.01);
            float *u = malloc(n * 4), *e = malloc(n * 4), *p = malloc(n * 4), *q = malloc(n * 4);
            uint32_t *a = malloc(k * 4), *b = malloc(k * 4);
            uint64_t s = 77 + (uint64_t)kind;
            for (size_t i = 0; i < n; i++) {
                uint64_t r = lcg(&s);
                u[i] = kind == 0 ? (float)(r % 1000003) * 1e-6f - 0.5f : kind == 1 ? (float)(r % 5) : 2.0f;
                e[i] = kind == 0 ? (float)(r % 97) * 1e-5f : 0.0f;
                q[i] = with_e ? u[i] + e[i] : u[i];
            }
            CU_ASSERT_EQUAL_FATAL(terse__topk_fused(u, with_e ? e : NULL, p, n, k, a), TERSE_OK);
            CU_ASSERT_EQUAL_FATAL(terse__topk_exact(q, n, k, b), TERSE_OK);
            CU_ASSERT_EQUAL(memcmp(a, b, k * 4), 0);
            if (with_e)
                CU_ASSERT_EQUAL(memcmp(p, q, n * 4), 0);
            u[n / 3] = kind == 2 ? INFINITY : NAN;
            CU_ASSERT_EQUAL(terse__topk_fused(u, with_e ? e : NULL, p, n, k, a), TERSE_ERR_INVALID_ARG);
            free(u), free(e), free(p), free(q), free(a), free(b);
        }
    float x[6] = {1, -5, 3, 5, 0, 2};
    size_t off[3] = {0, 3, 6}, kout;
    uint32_t idx[6];
    CU_ASSERT_EQUAL(terse_topk_select_bucket(x, off, 2, 0.34, 1, idx, &kout), TERSE_OK);
    CU_ASSERT_EQUAL(kout, 2);
    CU_ASSERT(idx[0] == 1 && idx[1] == 3);
    CU_ASSERT_EQUAL(terse_topk_select(x, 6, 7, 0, idx), TERSE_ERR_INVALID_ARG);
}

typedef struct {
    const char *name;
    terse_rank_fn fn;
} body_t;

/* Non-blocking: two handles' calls in flight with a dense allreduce, waited
 * in a rank-dependent order, equal to the blocking calls of twin handles. */
static int body_sparse_nonblocking(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, test_comm_over(ctx, g_transport, &comm) == TERSE_OK, "comm");
    size_t n = 5000;
    terse_sparse_params_t p;
    terse_sparse_params_init(&p);
    p.values = TERSE_SPARSE_CNAT8; /* a random stream: the twins must draw alike */
    terse_sparse_t *a, *b, *a2, *b2;
    RCHECK(ctx, terse_sparse_create(comm, n, &p, &a) == TERSE_OK && terse_sparse_create(comm, n, &p, &a2) == TERSE_OK,
           "create");
    RCHECK(ctx, terse_sparse_create(comm, n, NULL, &b) == TERSE_OK && terse_sparse_create(comm, n, NULL, &b2) == TERSE_OK,
           "create");
    uint32_t *idx = malloc(n * 4);
    float *val = malloc(n * 4), *ra = malloc(n * 4), *ra2 = malloc(n * 4);
    RCHECK(ctx, idx && val && ra && ra2, "malloc");
    for (int t = 0; t < 5; t++) {
        size_t k = make_input(ctx->rank, t, n, 1, idx, val);
        terse_request_t *qa, *qb, *qd;
        terse_sparse_list_t la, la2;
        RCHECK(ctx, terse_sparse_allreduce_start(a, idx, val, k, ra, &qa) == TERSE_OK, "start a");
        size_t kb = make_input(ctx->rank + 1, t, n, 0, idx, val); /* the input may change at once */
        RCHECK(ctx, terse_sparse_allgather_start(b, idx, val, kb, &la, &qb) == TERSE_OK, "start b");
        int64_t one = 1, sum;
        RCHECK(ctx, terse_allreduce_start(comm, &one, &sum, 1, TERSE_INT64, TERSE_SUM, &qd) == TERSE_OK, "dense");
        terse_request_t *order[3] = {qa, qb, qd};
        for (int i = 0; i < 3; i++)
            RCHECK(ctx, terse_request_wait(order[(i + ctx->rank) % 3]) == TERSE_OK, "wait");
        RCHECK(ctx, sum == ctx->size, "dense result");
        k = make_input(ctx->rank, t, n, 1, idx, val);
        RCHECK(ctx, terse_sparse_allreduce(a2, idx, val, k, ra2) == TERSE_OK, "blocking a");
        RCHECK(ctx, memcmp(ra, ra2, n * 4) == 0, "round %d: non-blocking allreduce != blocking", t);
        kb = make_input(ctx->rank + 1, t, n, 0, idx, val);
        RCHECK(ctx, terse_sparse_allgather(b2, idx, val, kb, &la2) == TERSE_OK, "blocking b");
        RCHECK(ctx, la.total == la2.total && !memcmp(la.idx, la2.idx, la.total * 4) &&
                        !memcmp(la.val, la2.val, la.total * 4), "round %d: non-blocking allgather != blocking", t);
    }
    terse_sparse_destroy(a), terse_sparse_destroy(b), terse_sparse_destroy(a2), terse_sparse_destroy(b2);
    /* SASG: a non-blocking step with a dense call in flight = the blocking twin */
    terse_sasg_params_t sp;
    terse_sasg_params_init(&sp);
    sp.D = 3, sp.ratio = 0.02, sp.values = TERSE_SPARSE_CNAT8;
    terse_sasg_t *g1, *g2;
    RCHECK(ctx, terse_sasg_create(comm, n, &sp, &g1) == TERSE_OK && terse_sasg_create(comm, n, &sp, &g2) == TERSE_OK,
           "sasg create");
    float *theta = calloc(n, 4), *grad = malloc(n * 4), *u1 = malloc(n * 4), *u2 = malloc(n * 4);
    RCHECK(ctx, theta && grad && u1 && u2, "malloc");
    for (int t = 0; t < 12; t++) {
        for (size_t i = 0; i < n; i++)
            grad[i] = (float)((i * 7 + (size_t)t * 13 + (size_t)ctx->rank * 5) % 101) - 50.0f;
        /* a change that skips now and then, the same on every rank's twin */
        double change = terse_sasg_need_change(g1) ? ((t + ctx->rank) % 3 == 0 ? 0.0 : 1e30) : -1;
        int up1 = -1, up2 = -2;
        terse_request_t *q, *qd;
        int64_t one = 1, sum;
        RCHECK(ctx, terse_sasg_step_start(g1, theta, grad, change, u1, &up1, &q) == TERSE_OK, "sasg start %d", t);
        RCHECK(ctx, terse_allreduce_start(comm, &one, &sum, 1, TERSE_INT64, TERSE_SUM, &qd) == TERSE_OK, "dense");
        RCHECK(ctx, terse_request_wait(qd) == TERSE_OK && terse_request_wait(q) == TERSE_OK, "sasg wait %d", t);
        RCHECK(ctx, terse_sasg_step(g2, theta, grad, change, u2, &up2) == TERSE_OK, "sasg blocking %d", t);
        RCHECK(ctx, up1 == up2 && memcmp(u1, u2, n * 4) == 0, "step %d: non-blocking SASG != blocking", t);
        for (size_t i = 0; i < n; i++)
            theta[i] -= u1[i];
    }
    terse_sasg_stats_t st1, st2;
    terse_sasg_stats(g1, &st1), terse_sasg_stats(g2, &st2);
    RCHECK(ctx, st1.uploads == st2.uploads && st1.skips == st2.skips && st1.steps == 12, "SASG counters");
    terse_sasg_destroy(g1), terse_sasg_destroy(g2);
    free(theta), free(grad), free(u1), free(u2);
    free(idx), free(val), free(ra), free(ra2);
    terse_comm_destroy(comm);
    return 0;
}

static const body_t bodies[] = {
    {"sparse allgather and allreduce against the reference", body_sparse},
    {"invalid sparse input: an error everywhere, then usable", body_sparse_errors},
    {"SASG: warm-up, threshold, skips, refresh, checkpoint", body_sasg},
    {"non-blocking sparse calls and SASG steps in flight with dense ones = blocking twins", body_sparse_nonblocking},
};
#define NB (int)(sizeof(bodies) / sizeof(bodies[0]))

static int g_body;
static void run_body(void)
{
    CU_ASSERT_EQUAL(test_run_ranks(bodies[g_body].name, g_transport, bodies[g_body].fn, rank_counts, NRC,
                                   CASE_TIMEOUT), 0);
    g_body++;
}

int main(void)
{
    const char *list = getenv("TERSE_TEST_TRANSPORTS");
    char tbuf[128];
    snprintf(tbuf, sizeof(tbuf), "%s", list && *list ? list : "tcp");
    CU_basic_set_mode(CU_BRM_VERBOSE);
    int failures = 0, first = 1;
    static char sname[64], tnames[NB][128];
    for (char *save, *tp = strtok_r(tbuf, ",", &save); tp; tp = strtok_r(NULL, ",", &save)) {
        g_transport = tp;
        if (CU_initialize_registry() != CUE_SUCCESS)
            return 2;
        if (first) {
            CU_pSuite t = CU_add_suite("top-k selection", NULL, NULL);
            CU_add_test(t, "sampled and fused equal exact (ties, constant, feedback); non-finite refused; bucket form; "
                           "k > n refused", test_topk_select);
            CU_add_test(t, "mutated messages refused or decoded in range", test_decode_fuzz);
            first = 0;
        }
        snprintf(sname, sizeof(sname), "sparse collectives over %s", tp);
        CU_pSuite s = CU_add_suite(sname, NULL, NULL);
        for (int b = 0; b < NB; b++) {
            snprintf(tnames[b], sizeof(tnames[b]), "%s, ranks 1-8", bodies[b].name);
            CU_add_test(s, tnames[b], run_body);
        }
        g_body = 0;
        CU_basic_run_tests();
        failures += (int)CU_get_number_of_tests_failed();
        CU_basic_show_failures(CU_get_failure_list());
        printf("\n");
        CU_cleanup_registry();
    }
    return failures ? 1 : 0;
}
