/*
 * test_compressed.c - the persistent compressed allreduce over 1-8 ranks:
 * with the identity codec it equals the dense allreduce exactly; error
 * feedback conserves the inputs exactly; the step-ahead point is x - e;
 * error averaging leaves identical residuals; every codec x algorithm gives
 * bit-identical outputs on all ranks; save/load resumes bit-exactly and
 * refuses foreign checkpoints; bad parameters, NaN input and mismatched
 * parameters across ranks give clear errors. Runs over every transport in
 * TERSE_TEST_TRANSPORTS (default tcp).
 */
#include "launcher.h"
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
static int g_quick; /* TERSE_TEST_QUICK: smaller tensors in the emulated guest */

static terse_status_t make_comm(const terse_launch_ctx_t *ctx, terse_comm_t **comm)
{
    return test_comm_over(ctx, g_transport, comm);
}


/* Inputs that are multiples of 2^-8 in [-4, 4]: every sum in these tests is exact. */
static void dyadic(float *x, size_t n, int rank, int step)
{
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(rank * 131 + step + 1);
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int)(s >> 40) % 2049 - 1024) / 256.0f;
    }
}

static void gaussianish(float *x, size_t n, int rank, int step)
{
    uint64_t s = 0x51ed2701ull * (uint64_t)(rank * 977 + step * 13 + 7);
    for (size_t i = 0; i < n; i++) {
        double a = 0;
        for (int k = 0; k < 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            a += (double)(s >> 11) / 9007199254740992.0 - 0.5;
        }
        x[i] = (float)(a * 0.01 * (1 + (double)(i % 17)));
    }
}

static terse_compressed_params_t params(const char *codec, terse_compressed_algo_t algo, int ef)
{
    terse_compressed_params_t p;
    terse_compressed_params_init(&p);
    p.codec = codec;
    p.algo = algo;
    p.error_feedback = ef;
    p.ratio = 0.05;
    return p;
}

/* ---- identity codec == dense allreduce -------------------------------- */

static int body_identity(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
    const size_t counts[] = {0, 1, 7, 1009, 65537};
    const terse_compressed_algo_t algos[] = {TERSE_COMPRESSED_ALLGATHER, TERSE_COMPRESSED_TWO_PHASE,
                                             TERSE_COMPRESSED_RING};
    for (size_t ci = 0; ci < 5; ci++) {
        size_t n = counts[ci];
        float *x = malloc((n + 1) * 4), *out = malloc((n + 1) * 4), *ref = malloc((n + 1) * 4);
        dyadic(x, n, ctx->rank, (int)ci);
        RCHECK(ctx, terse_allreduce(comm, x, ref, n, TERSE_FLOAT32, TERSE_SUM) == TERSE_OK, "dense");
        for (int a = 0; a < 3; a++)
            for (int op = 0; op < 2; op++) {
                terse_compressed_params_t p = params("fp32", algos[a], 0);
                p.op = op ? TERSE_AVG : TERSE_SUM;
                terse_compressed_t *c;
                RCHECK(ctx, terse_compressed_create(comm, n, &p, &c) == TERSE_OK, "create");
                for (int step = 0; step < 2; step++) {
                    memset(out, 0xff, (n + 1) * 4);
                    terse_status_t st = terse_compressed_allreduce(c, x, out);
                    RCHECK(ctx, st == TERSE_OK, "run: %s", terse_strerror(st));
                    for (size_t i = 0; i < n; i++) {
                        float want = op ? ref[i] / (float)ctx->size : ref[i];
                        RCHECK(ctx, memcmp(&out[i], &want, 4) == 0,
                               "algo %d op %d count %zu [%zu]: %g != %g", a, op, n, i, out[i], want);
                    }
                }
                terse_compressed_stats_t s;
                RCHECK(ctx, terse_compressed_stats(c, &s) == TERSE_OK && s.steps == 2, "stats");
                /* fp32 codes: the bytes a dense ring moves, plus headers (allgather: (n-1)/n x more) */
                if (ctx->size > 1 && n > 60000 && a != 0)
                    RCHECK(ctx, s.ratio > 0.999 && s.ratio < 1.01, "ratio %g", s.ratio);
                terse_compressed_destroy(c);
            }
        free(x), free(out), free(ref);
    }
    terse_comm_destroy(comm);
    return 0;
}

/* ---- error feedback conserves every input exactly ---------------------- */

static int body_conservation(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
    size_t n = g_quick ? 2003 : 20011;
    const char *codecs[] = {"cnat8", "topk", "topk+cnat8", "cnat9"};
    float *x = malloc(n * 4), *out = malloc(n * 4), *sum_in = calloc(n, 4), *sum_out = calloc(n, 4);
    float *e = malloc(n * 4), *es = malloc(n * 4), *y = malloc(n * 4), *in_all = malloc(n * 4);
    for (int k = 0; k < 4; k++)
        for (int two = 0; two < 2; two++) {
            terse_compressed_params_t p =
                params(codecs[k], two ? TERSE_COMPRESSED_TWO_PHASE : TERSE_COMPRESSED_ALLGATHER, 1);
            p.op = TERSE_SUM;
            p.ratio = 0.1;
            if (two)
                p.server_codec = "fp32"; /* exact downlink: only the worker side is lossy */
            terse_compressed_t *c;
            RCHECK(ctx, terse_compressed_create(comm, n, &p, &c) == TERSE_OK, "create %s", codecs[k]);
            memset(sum_in, 0, n * 4), memset(sum_out, 0, n * 4);
            for (int step = 0; step < 6; step++) {
                dyadic(x, n, ctx->rank, step + 10 * k);
                /* step-ahead point is x - e with the residual before the call */
                RCHECK(ctx, terse_compressed_residual(c, e) == TERSE_OK, "residual");
                RCHECK(ctx, terse_compressed_step_ahead(c, x, y) == TERSE_OK, "step_ahead");
                for (size_t i = 0; i < n; i++) {
                    float want = x[i] - e[i];
                    RCHECK(ctx, memcmp(&y[i], &want, 4) == 0, "step-ahead [%zu]", i);
                }
                RCHECK(ctx, terse_allreduce(comm, x, in_all, n, TERSE_FLOAT32, TERSE_SUM) == TERSE_OK, "ref");
                terse_status_t st = terse_compressed_allreduce(c, x, out);
                RCHECK(ctx, st == TERSE_OK, "run %s: %s", codecs[k], terse_strerror(st));
                for (size_t i = 0; i < n; i++)
                    sum_in[i] += in_all[i], sum_out[i] += out[i];
            }
            /* sum of outputs + every rank's residual == sum of every input, exactly */
            RCHECK(ctx, terse_compressed_residual(c, e) == TERSE_OK, "residual");
            RCHECK(ctx, terse_allreduce(comm, e, es, n, TERSE_FLOAT32, TERSE_SUM) == TERSE_OK, "sum e");
            double enorm = 0;
            for (size_t i = 0; i < n; i++) {
                float lhs = sum_out[i] + es[i];
                RCHECK(ctx, lhs == sum_in[i], "%s%s [%zu]: out %g + e %g != in %g", codecs[k],
                       two ? " two-phase" : "", i, sum_out[i], es[i], sum_in[i]);
                enorm += (double)e[i] * e[i];
            }
            terse_compressed_stats_t s;
            terse_compressed_stats(c, &s);
            RCHECK(ctx, fabs(s.residual_norm - sqrt(enorm)) <= 1e-6 * (1 + sqrt(enorm)),
                   "residual norm %g vs %g", s.residual_norm, sqrt(enorm));
            RCHECK(ctx, strcmp(codecs[k], "cnat9") == 0 || enorm > 0, "%s left no residual", codecs[k]);
            terse_compressed_destroy(c);
        }
    free(x), free(out), free(sum_in), free(sum_out), free(e), free(es), free(y), free(in_all);
    terse_comm_destroy(comm);
    return 0;
}

/* ---- error averaging: identical residuals after every H-th call -------- */

static int body_error_average(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
    size_t n = 4099;
    const char *codecs[] = {"sign", "topk"};
    float *x = malloc(n * 4), *out = malloc(n * 4), *e = malloc(n * 4);
    for (int k = 0; k < 2; k++) {
        terse_compressed_params_t p = params(codecs[k], TERSE_COMPRESSED_AUTO, 1);
        p.error_average_every = 3;
        terse_compressed_t *c;
        RCHECK(ctx, terse_compressed_create(comm, n, &p, &c) == TERSE_OK, "create");
        for (int step = 1; step <= 7; step++) {
            gaussianish(x, n, ctx->rank, step);
            RCHECK(ctx, terse_compressed_allreduce(c, x, out) == TERSE_OK, "run");
            RCHECK(ctx, test_same_everywhere(comm, out, n * 4), "outputs differ");
            terse_compressed_residual(c, e);
            int same = test_same_everywhere(comm, e, n * 4);
            if (step % 3 == 0)
                RCHECK(ctx, same, "%s step %d: residuals differ after averaging", codecs[k], step);
            else if (ctx->size > 1)
                RCHECK(ctx, !same, "%s step %d: residuals equal without averaging", codecs[k], step);
        }
        terse_compressed_stats_t s;
        terse_compressed_stats(c, &s);
        RCHECK(ctx, s.error_averages == 2 && s.steps == 7, "counters %llu %llu",
               (unsigned long long)s.error_averages, (unsigned long long)s.steps);
        /* rescaling the residual (learning-rate change) */
        float e0 = e[5];
        RCHECK(ctx, terse_compressed_scale_residual(c, 0.5f) == TERSE_OK, "scale");
        terse_compressed_residual(c, e);
        RCHECK(ctx, e[5] == e0 * 0.5f, "scaled residual");
        terse_compressed_destroy(c);
    }
    free(x), free(out), free(e);
    terse_comm_destroy(comm);
    return 0;
}

/* ---- every codec and algorithm: identical bits on all ranks ------------ */

static const char *all_codecs[] = {"fp32", "fp16", "bf16", "cnat8", "cnat9", "natdither", "qsgd",
                                   "sign", "sign1", "topk", "randk", "topk+cnat8", "randk+cnat8"};
#define NCODECS (int)(sizeof(all_codecs) / sizeof(all_codecs[0]))

static int body_identical(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
    size_t n = g_quick ? 3001 : 30011;
    float *x = malloc(n * 4), *out = malloc(n * 4), *ref = malloc(n * 4);
    for (int k = 0; k < NCODECS; k++)
        for (int a = TERSE_COMPRESSED_ALLGATHER; a <= TERSE_COMPRESSED_RING; a++) {
            int biased = !strcmp(all_codecs[k], "sign") || !strncmp(all_codecs[k], "topk", 4);
            if (a == TERSE_COMPRESSED_RING && (biased || !strncmp(all_codecs[k], "randk", 5)))
                continue;
            /* feedback needs a contractive codec; the unbiased high-variance ones
             * (omega > 1: random-k scaled by n/k, QSGD at 8 levels, 1-bit) are not */
            int randk = !strncmp(all_codecs[k], "randk", 5) || !strcmp(all_codecs[k], "qsgd") ||
                        !strcmp(all_codecs[k], "sign1");
            terse_compressed_params_t p = params(all_codecs[k], (terse_compressed_algo_t)a,
                                                 a != TERSE_COMPRESSED_RING && !randk);
            p.server_error_feedback = a == TERSE_COMPRESSED_TWO_PHASE && !randk;
            terse_compressed_t *c;
            terse_status_t st = terse_compressed_create(comm, n, &p, &c);
            RCHECK(ctx, st == TERSE_OK, "create %s algo %d: %s", all_codecs[k], a, terse_strerror(st));
            double err = 0, refn = 0;
            for (int step = 0; step < 3; step++) {
                gaussianish(x, n, ctx->rank, step);
                st = terse_compressed_allreduce(c, x, out);
                RCHECK(ctx, st == TERSE_OK, "%s algo %d: %s", all_codecs[k], a, terse_strerror(st));
                RCHECK(ctx, test_same_everywhere(comm, out, n * 4), "%s algo %d: outputs differ",
                       all_codecs[k], a);
                RCHECK(ctx, terse_allreduce(comm, x, ref, n, TERSE_FLOAT32, TERSE_AVG) == TERSE_OK, "ref");
                for (size_t i = 0; i < n; i++) {
                    RCHECK(ctx, isfinite(out[i]), "non-finite output");
                    err += (double)(out[i] - ref[i]) * (out[i] - ref[i]);
                    refn += (double)ref[i] * ref[i];
                }
            }
            /* sanity on the aggregate: lossless-ish codecs are close, the others not absurd */
            double rel = sqrt(err / refn);
            int lossless = !strcmp(all_codecs[k], "fp32") || !strcmp(all_codecs[k], "fp16") ||
                           !strcmp(all_codecs[k], "bf16");
            if (getenv("TERSE_TEST_VERBOSE"))
                fprintf(stderr, "rank %d/%d %s algo %d: relative error %.4f\n", ctx->rank, ctx->size,
                        all_codecs[k], a, rel);
            RCHECK(ctx, lossless ? rel < 1e-2 : rel < (randk ? 20 : 3), "%s algo %d: relative error %g",
                   all_codecs[k], a, rel);
            terse_compressed_stats_t s;
            terse_compressed_stats(c, &s);
            RCHECK(ctx, s.steps == 3 && !strcmp(s.codec, all_codecs[k]), "stats");
            if (ctx->size > 1 && !strcmp(all_codecs[k], "cnat8") && a == TERSE_COMPRESSED_TWO_PHASE)
                RCHECK(ctx, s.ratio < 0.26, "cnat8 two-phase moved %.3f of the dense bytes", s.ratio);
            terse_compressed_destroy(c);
        }
    free(x), free(out), free(ref);
    terse_comm_destroy(comm);
    return 0;
}

/* ---- checkpoint and resume bit-exactly --------------------------------- */

static int body_save_load(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
    size_t n = 5003;
    const char *codecs[] = {"cnat8", "topk", "randk+cnat8"};
    float *x = malloc(n * 4), *out = malloc(n * 4), *e1 = malloc(n * 4), *e2 = malloc(n * 4);
    float *outs = malloc(3 * n * 4);
    for (int k = 0; k < 3; k++) {
        terse_compressed_params_t p = params(codecs[k], TERSE_COMPRESSED_AUTO, 1);
        p.server_error_feedback = k != 1;
        p.error_average_every = 4;
        terse_compressed_t *c, *d;
        RCHECK(ctx, terse_compressed_create(comm, n, &p, &c) == TERSE_OK, "create");
        for (int step = 0; step < 3; step++) {
            gaussianish(x, n, ctx->rank, step);
            RCHECK(ctx, terse_compressed_allreduce(c, x, out) == TERSE_OK, "run");
        }
        size_t len = terse_compressed_state_size(c);
        char *ck = malloc(len);
        RCHECK(ctx, terse_compressed_save(c, ck, len) == TERSE_OK, "save");
        RCHECK(ctx, terse_compressed_save(c, ck, len - 1) == TERSE_ERR_INVALID_ARG, "short buffer");
        for (int step = 3; step < 6; step++) {
            gaussianish(x, n, ctx->rank, step);
            RCHECK(ctx, terse_compressed_allreduce(c, x, outs + (size_t)(step - 3) * n) == TERSE_OK, "run");
        }
        terse_compressed_residual(c, e1);
        terse_compressed_destroy(c);
        RCHECK(ctx, terse_compressed_create(comm, n, &p, &d) == TERSE_OK, "create again");
        RCHECK(ctx, terse_compressed_load(d, ck, len) == TERSE_OK, "load");
        for (int step = 3; step < 6; step++) {
            gaussianish(x, n, ctx->rank, step);
            RCHECK(ctx, terse_compressed_allreduce(d, x, out) == TERSE_OK, "run resumed");
            RCHECK(ctx, memcmp(out, outs + (size_t)(step - 3) * n, n * 4) == 0,
                   "%s: step %d differs after resume", codecs[k], step);
        }
        terse_compressed_residual(d, e2);
        RCHECK(ctx, memcmp(e1, e2, n * 4) == 0, "%s: residual differs after resume", codecs[k]);
        /* foreign and damaged checkpoints are refused and change nothing */
        ck[len / 2] ^= 1;
        RCHECK(ctx, terse_compressed_load(d, ck, len) == TERSE_ERR_INVALID_ARG, "corrupt accepted");
        ck[len / 2] ^= 1;
        RCHECK(ctx, terse_compressed_load(d, ck, len - 4) == TERSE_ERR_INVALID_ARG, "truncated accepted");
        terse_compressed_residual(d, e1);
        RCHECK(ctx, memcmp(e1, e2, n * 4) == 0, "refused load changed the state");
        terse_compressed_params_t q = p;
        q.ratio = 0.2;
        terse_compressed_t *other;
        RCHECK(ctx, terse_compressed_create(comm, n, &q, &other) == TERSE_OK, "create other");
        RCHECK(ctx, terse_compressed_load(other, ck, len) == TERSE_ERR_INVALID_ARG, "foreign params accepted");
        terse_compressed_destroy(other);
        terse_compressed_destroy(d);
        free(ck);
    }
    free(x), free(out), free(e1), free(e2), free(outs);
    terse_comm_destroy(comm);
    return 0;
}

/* ---- errors ------------------------------------------------------------- */

static int body_errors(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
    terse_compressed_t *c = (terse_compressed_t *)1;
    terse_compressed_params_t p = params("nope", TERSE_COMPRESSED_AUTO, 1);
    RCHECK(ctx, terse_compressed_create(comm, 10, &p, &c) == TERSE_ERR_INVALID_ARG && !c, "unknown codec");
    p = params("topk", TERSE_COMPRESSED_AUTO, 1);
    p.ratio = 0;
    RCHECK(ctx, terse_compressed_create(comm, 10, &p, &c) == TERSE_ERR_INVALID_ARG, "ratio 0");
    p = params("sign", TERSE_COMPRESSED_RING, 0);
    RCHECK(ctx, terse_compressed_create(comm, 10, &p, &c) == TERSE_ERR_INVALID_ARG, "ring + biased");
    p = params("cnat8", TERSE_COMPRESSED_RING, 1);
    RCHECK(ctx, terse_compressed_create(comm, 10, &p, &c) == TERSE_ERR_INVALID_ARG, "ring + feedback");
    p = params("cnat8", TERSE_COMPRESSED_ALLGATHER, 1);
    p.server_error_feedback = 1;
    RCHECK(ctx, terse_compressed_create(comm, 10, &p, &c) == TERSE_ERR_INVALID_ARG, "allgather + server");
    p = params("cnat8", TERSE_COMPRESSED_AUTO, 1);
    p.op = TERSE_MAX;
    RCHECK(ctx, terse_compressed_create(comm, 10, &p, &c) == TERSE_ERR_INVALID_ARG, "op max");
    RCHECK(ctx, terse_compressed_create(NULL, 10, &p, &c) == TERSE_ERR_INVALID_ARG, "null comm");

    /* NaN on one rank: every rank gets INVALID_ARG, state and communicator survive */
    size_t n = 1000;
    float *x = malloc(n * 4), *out = malloc(n * 4), *e0 = malloc(n * 4), *e1 = malloc(n * 4);
    for (int a = TERSE_COMPRESSED_ALLGATHER; a <= TERSE_COMPRESSED_RING; a++) {
        p = params("cnat8", (terse_compressed_algo_t)a, a != TERSE_COMPRESSED_RING);
        RCHECK(ctx, terse_compressed_create(comm, n, &p, &c) == TERSE_OK, "create");
        gaussianish(x, n, ctx->rank, 1);
        RCHECK(ctx, terse_compressed_allreduce(c, x, out) == TERSE_OK, "warm-up");
        terse_compressed_residual(c, e0);
        if (ctx->rank == ctx->size - 1)
            x[n / 2] = NAN;
        terse_status_t st = terse_compressed_allreduce(c, x, out);
        RCHECK(ctx, st == TERSE_ERR_INVALID_ARG, "algo %d: NaN gave %s", a, terse_strerror(st));
        terse_compressed_residual(c, e1);
        RCHECK(ctx, memcmp(e0, e1, n * 4) == 0, "failed call changed the residual");
        terse_compressed_stats_t s;
        terse_compressed_stats(c, &s);
        RCHECK(ctx, s.steps == 1, "failed call counted");
        gaussianish(x, n, ctx->rank, 2);
        st = terse_compressed_allreduce(c, x, out);
        RCHECK(ctx, st == TERSE_OK, "after NaN: %s", terse_strerror(st));
        RCHECK(ctx, test_same_everywhere(comm, out, n * 4), "outputs differ");
        terse_compressed_destroy(c);
    }
    /* finite inputs whose sum overflows at the owner (two-phase) or on the way
     * round (ring): an error on every rank, not a hang, and still usable */
    for (int a = TERSE_COMPRESSED_TWO_PHASE; a <= TERSE_COMPRESSED_RING && ctx->size > 1; a++) {
        p = params("fp32", (terse_compressed_algo_t)a, 0);
        p.op = TERSE_SUM;
        RCHECK(ctx, terse_compressed_create(comm, n, &p, &c) == TERSE_OK, "create");
        for (size_t i = 0; i < n; i++)
            x[i] = 3e38f;
        terse_status_t st = terse_compressed_allreduce(c, x, out);
        RCHECK(ctx, st == TERSE_ERR_INVALID_ARG, "algo %d: overflowing sum gave %s", a, terse_strerror(st));
        gaussianish(x, n, ctx->rank, 3);
        st = terse_compressed_allreduce(c, x, out);
        RCHECK(ctx, st == TERSE_OK, "after the overflow: %s", terse_strerror(st));
        terse_compressed_destroy(c);
    }
    free(x), free(out), free(e0), free(e1);

    /* Ranks that disagree on the parameters: a mismatch error, not a hang */
    if (ctx->size > 1) {
        p = params(ctx->rank == 0 ? "cnat8" : "cnat9", TERSE_COMPRESSED_TWO_PHASE, 1);
        /* a rank that already heard of the mismatch fails at create */
        terse_status_t st = terse_compressed_create(comm, 100, &p, &c);
        float v[100] = {0};
        if (st == TERSE_OK) {
            st = terse_compressed_allreduce(c, v, v);
            terse_compressed_destroy(c);
        }
        RCHECK(ctx, st == TERSE_ERR_MISMATCH || st == TERSE_ERR_REMOTE_ABORT || st == TERSE_ERR_PEER_FAILED,
               "mismatched codecs gave %s", terse_strerror(st));
    }
    terse_comm_destroy(comm);
    return 0;
}

/* ---- non-blocking steps: the same bits as the blocking ones --------------- */

static int body_nonblocking(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm;
    RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
    /* three buckets - two-phase, allgather, ring - of different sizes and codecs,
     * a twin of each run blocking */
    const char *codecs[3] = {"cnat8", "sign", "natdither"};
    const terse_compressed_algo_t algos[3] = {TERSE_COMPRESSED_TWO_PHASE, TERSE_COMPRESSED_ALLGATHER,
                                              TERSE_COMPRESSED_RING};
    size_t counts[3] = {g_quick ? 20011 : 200011, 3001, g_quick ? 9001 : 70001};
    terse_compressed_t *nb[3], *bl[3];
    float *x[3], *o_nb[3], *o_bl[3];
    for (int b = 0; b < 3; b++) {
        terse_compressed_params_t p = params(codecs[b], algos[b], algos[b] != TERSE_COMPRESSED_RING);
        p.error_average_every = b == 0 ? 3 : 0; /* the average rides in the same schedule */
        p.server_error_feedback = algos[b] == TERSE_COMPRESSED_TWO_PHASE;
        RCHECK(ctx, terse_compressed_create(comm, counts[b], &p, &nb[b]) == TERSE_OK &&
                        terse_compressed_create(comm, counts[b], &p, &bl[b]) == TERSE_OK, "create %d", b);
        x[b] = malloc(counts[b] * 4), o_nb[b] = malloc(counts[b] * 4), o_bl[b] = malloc(counts[b] * 4);
        RCHECK(ctx, x[b] && o_nb[b] && o_bl[b], "malloc");
    }
    float dense_in[100], dense_out[100];
    for (int step = 0; step < 7; step++) {
        terse_request_t *req[3], *dreq;
        /* all three and a dense allreduce in flight at once, waited in a rank-dependent order */
        for (int b = 0; b < 3; b++) {
            gaussianish(x[b], counts[b], ctx->rank, step * 3 + b);
            RCHECK(ctx, terse_compressed_allreduce_start(nb[b], x[b], o_nb[b], &req[b]) == TERSE_OK, "start %d", b);
            if (b == 0 && ctx->size > 1) {
                /* misuse while it is in flight (it needs the peers: not done yet) */
                terse_request_t *again = NULL;
                size_t sz = terse_compressed_state_size(nb[0]);
                char *state = calloc(1, sz);
                RCHECK(ctx, state != NULL, "malloc");
                RCHECK(ctx, terse_compressed_allreduce_start(nb[0], x[0], o_nb[0], &again) == TERSE_ERR_BUSY,
                       "second start of one handle");
                RCHECK(ctx, terse_compressed_save(nb[0], state, sz) == TERSE_ERR_BUSY, "save in flight");
                RCHECK(ctx, terse_compressed_load(nb[0], state, sz) == TERSE_ERR_BUSY, "load in flight");
                free(state);
                RCHECK(ctx, terse_compressed_scale_residual(nb[0], 0.5f) == TERSE_ERR_BUSY, "rescale in flight");
            }
            if (b == 1) {
                for (int i = 0; i < 100; i++)
                    dense_in[i] = (float)(ctx->rank + i);
                RCHECK(ctx, terse_allreduce_start(comm, dense_in, dense_out, 100, TERSE_FLOAT32, TERSE_SUM, &dreq) ==
                                TERSE_OK, "dense start");
            }
        }
        for (int k = 0; k < 3; k++) {
            int b = (k + ctx->rank + step) % 3;
            terse_status_t st = terse_request_wait(req[b]);
            RCHECK(ctx, st == TERSE_OK, "wait %d: %s", b, terse_strerror(st));
        }
        RCHECK(ctx, terse_request_wait(dreq) == TERSE_OK, "dense wait");
        RCHECK(ctx, dense_out[7] == (float)(ctx->size * 7 + ctx->size * (ctx->size - 1) / 2), "dense result");
        for (int b = 0; b < 3; b++) {
            RCHECK(ctx, terse_compressed_allreduce(bl[b], x[b], o_bl[b]) == TERSE_OK, "blocking %d", b);
            RCHECK(ctx, memcmp(o_nb[b], o_bl[b], counts[b] * 4) == 0, "step %d bucket %d: non-blocking != blocking",
                   step, b);
            RCHECK(ctx, test_same_everywhere(comm, o_nb[b], counts[b] * 4), "step %d bucket %d differs", step, b);
        }
    }
    /* the residuals and counters agree too; a poisoned step changes nothing */
    for (int b = 0; b < 3; b++) {
        size_t sz = terse_compressed_state_size(nb[b]);
        char *s1 = malloc(sz), *s2 = malloc(sz);
        RCHECK(ctx, s1 && s2, "malloc");
        RCHECK(ctx, terse_compressed_save(nb[b], s1, sz) == TERSE_OK && terse_compressed_save(bl[b], s2, sz) == TERSE_OK,
               "save");
        RCHECK(ctx, memcmp(s1, s2, sz) == 0, "bucket %d: states differ", b);
        x[b][counts[b] / 2] = ctx->rank == ctx->size - 1 ? NAN : 1.0f;
        terse_request_t *req;
        RCHECK(ctx, terse_compressed_allreduce_start(nb[b], x[b], o_nb[b], &req) == TERSE_OK, "poisoned start");
        RCHECK(ctx, terse_request_wait(req) == TERSE_ERR_INVALID_ARG, "poisoned step");
        RCHECK(ctx, terse_compressed_save(nb[b], s2, sz) == TERSE_OK && memcmp(s1, s2, sz) == 0,
               "bucket %d: a failed step changed the state", b);
        free(s1), free(s2);
        terse_compressed_destroy(nb[b]);
        terse_compressed_destroy(bl[b]);
        free(x[b]), free(o_nb[b]), free(o_bl[b]);
    }
    RCHECK(ctx, terse_comm_error(comm, NULL) == TERSE_OK, "communicator still usable");
    terse_comm_destroy(comm);
    return 0;
}

/* ---- auto's choice weighs bytes against steps when the link is known -------- */

static int body_auto_link(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    size_t n = 101770; /* the MLP of examples/fmnist_train: 400 KB of float32 */
    const char *want_fast[] = {"allgather", "allgather", "allgather"};
    const char *rates[] = {"", "1", "100"};
    for (int k = 0; k < 3; k++) {
        if (rates[k][0])
            setenv("TERSE_LINK_GBPS", rates[k], 1);
        else
            unsetenv("TERSE_LINK_GBPS");
        terse_comm_t *comm;
        RCHECK(ctx, make_comm(ctx, &comm) == TERSE_OK, "comm");
        terse_compressed_params_t p = params("cnat8", TERSE_COMPRESSED_AUTO, 0);
        terse_compressed_t *c;
        RCHECK(ctx, terse_compressed_create(comm, n, &p, &c) == TERSE_OK, "create");
        terse_compressed_stats_t s;
        terse_compressed_stats(c, &s);
        /* 1 Gbit/s: the code's bytes dominate - two-phase sends half as many at 4 ranks;
         * loopback default and 100 Gbit/s: the allgather's fewer steps win at 400 KB */
        const char *want = ctx->size > 2 && k == 1 ? "two_phase" : want_fast[k];
        RCHECK(ctx, !strcmp(s.algorithm, want), "TERSE_LINK_GBPS=%s, %d ranks: auto chose %s, want %s",
               rates[k][0] ? rates[k] : "(unset)", ctx->size, s.algorithm, want);
        terse_compressed_destroy(c);
        terse_comm_destroy(comm);
    }
    unsetenv("TERSE_LINK_GBPS");
    return 0;
}

typedef struct {
    const char *name;
    terse_rank_fn fn;
} body_t;

static const body_t bodies[] = {
    {"identity codec equals the dense allreduce", body_identity},
    {"error feedback conserves the inputs; step-ahead point", body_conservation},
    {"error averaging and residual rescaling", body_error_average},
    {"every codec and algorithm bit-identical on all ranks", body_identical},
    {"save/load resumes bit-exactly, refuses foreign state", body_save_load},
    {"bad parameters, NaN input, mismatched ranks", body_errors},
    {"non-blocking steps of three buckets in flight = blocking, busy handle, failed step changes nothing",
     body_nonblocking},
    {"auto weighs bytes against steps for TERSE_LINK_GBPS", body_auto_link},
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
    const char *list = getenv("TERSE_TEST_TRANSPORTS"), *quick = getenv("TERSE_TEST_QUICK");
    g_quick = quick && *quick == '1';
    char tbuf[128];
    snprintf(tbuf, sizeof(tbuf), "%s", list && *list ? list : "tcp");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    int failures = 0;
    static char sname[64], tnames[NB][160];
    for (char *save, *tp = strtok_r(tbuf, ",", &save); tp; tp = strtok_r(NULL, ",", &save)) {
        g_transport = tp;
        snprintf(sname, sizeof(sname), "compressed allreduce over %s", tp);
        CU_cleanup_registry();
        CU_initialize_registry();
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
    }
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
