/*
 * test_progress.c - the progress thread (terse_comm_params_t.progress_thread):
 * requests advance while the caller computes without calling terse (and,
 * as the control, do not without the thread); compressed steps of several
 * buckets in flight equal the blocking steps bit for bit; many requests on
 * two communicators waited in random order; plans restarted many times;
 * a killed peer is reported, not waited for. scripts/tsan.sh runs this
 * suite under ThreadSanitizer. Over each transport in TERSE_TEST_TRANSPORTS.
 */
#include "launcher.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *g_transport = "tcp";

static terse_status_t mk(const terse_launch_ctx_t *ctx, int thread, terse_comm_t **comm)
{
    terse_comm_params_t p = TERSE_COMM_PARAMS_INIT;
    p.rank = ctx->rank, p.size = ctx->size, p.root_addr = ctx->root, p.secret = ctx->secret;
    p.transport = g_transport, p.timeout_sec = 60, p.progress_thread = thread ? 1 : -1;
    return terse_comm_create(&p, comm);
}


/* The caller's "backward pass": CPU work for `sec`, no terse call. */
static double compute(double sec)
{
    double t0 = terse_launch_now(), x = 1;
    while (terse_launch_now() - t0 < sec)
        for (int i = 0; i < 10000; i++)
            x = x * 1.0000001 + 1e-9;
    return x;
}

/* ---- a large allreduce completes while the caller computes ----------------- */
static int body_overlap(const terse_launch_ctx_t *ctx, void *arg)
{
    int thread = *(int *)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, thread, &c) == TERSE_OK, "create");
    int n = ctx->size;
    size_t count = (size_t)4 << 20; /* 16 MiB: more than socket buffers hold */
    float *x = malloc(count * sizeof(float));
    RCHECK(ctx, x != NULL, "malloc");
    /* compute for 3x what the allreduce takes alone (sanitizers slow it down) */
    double t0 = terse_launch_now();
    RCHECK(ctx, terse_allreduce(c, x, x, count, TERSE_FLOAT32, TERSE_SUM) == TERSE_OK, "alone");
    double alone = terse_launch_now() - t0, slowest;
    RCHECK(ctx, terse_allreduce(c, &alone, &slowest, 1, TERSE_FLOAT64, TERSE_MAX) == TERSE_OK, "max");
    double busy = 3 * slowest > 0.3 ? 3 * slowest : 0.3;
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < count; i++)
            x[i] = (float)((ctx->rank + (int)(i % 11)) % 7);
        RCHECK(ctx, terse_barrier(c) == TERSE_OK, "barrier");
        terse_request_t *r;
        RCHECK(ctx, terse_allreduce_start(c, x, x, count, TERSE_FLOAT32, TERSE_SUM, &r) == TERSE_OK, "start");
        compute(busy);
        int done = 0;
        terse_status_t st = terse_request_test(r, &done);
        if (thread) {
            RCHECK(ctx, done && st == TERSE_OK, "round %d: not done after computing %.2f s (3x its time alone) "
                   "with a progress thread (%s)", round, busy, terse_strerror(st));
        } else {
            /* the control: nobody drove it */
            RCHECK(ctx, !done, "round %d: finished without progress (the test proves nothing)", round);
        }
        RCHECK(ctx, terse_request_wait(r) == TERSE_OK, "wait");
        for (size_t i = 0; i < count; i += 997) {
            double want = 0;
            for (int q = 0; q < n; q++)
                want += (q + (int)(i % 11)) % 7;
            RCHECK(ctx, x[i] == (float)want, "x[%zu] = %g, want %g", i, x[i], want);
        }
    }
    terse_comm_destroy(c);
    free(x);
    return 0;
}

/* ---- compressed buckets in flight = blocking, bit for bit ----------------- */
static int body_compressed(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c, *ref;
    RCHECK(ctx, mk(ctx, 1, &c) == TERSE_OK, "create");
    RCHECK(ctx, terse_comm_dup(c, &ref) == TERSE_OK, "dup");
    enum { B = 3, STEPS = 4 };
    static const char *codecs[B] = {"cnat8", "sign", "topk"};
    size_t count[B] = {100003, 7, 300000};
    terse_compressed_t *h[B], *hb[B];
    float *in[B], *out[B], *outb[B];
    for (int b = 0; b < B; b++) {
        terse_compressed_params_t p;
        terse_compressed_params_init(&p);
        p.codec = codecs[b];
        p.seed = 42 + (uint64_t)b;
        RCHECK(ctx, terse_compressed_create(c, count[b], &p, &h[b]) == TERSE_OK, "create %s", codecs[b]);
        RCHECK(ctx, terse_compressed_create(ref, count[b], &p, &hb[b]) == TERSE_OK, "create ref %s", codecs[b]);
        in[b] = malloc(count[b] * sizeof(float));
        out[b] = malloc(count[b] * sizeof(float));
        outb[b] = malloc(count[b] * sizeof(float));
        RCHECK(ctx, in[b] && out[b] && outb[b], "malloc");
    }
    for (int s = 0; s < STEPS; s++) {
        terse_request_t *r[B];
        for (int b = 0; b < B; b++) {
            for (size_t i = 0; i < count[b]; i++)
                in[b][i] = sinf((float)(i * (size_t)(ctx->rank + 1) + (size_t)s * 7 + (size_t)b)) * 0.01f;
            RCHECK(ctx, terse_compressed_allreduce_start(h[b], in[b], out[b], &r[b]) == TERSE_OK, "start");
        }
        compute(0.05);
        for (int b = B - 1; b >= 0; b--) /* waited in reverse */
            RCHECK(ctx, terse_request_wait(r[b]) == TERSE_OK, "wait %d", b);
        for (int b = 0; b < B; b++) {
            RCHECK(ctx, terse_compressed_allreduce(hb[b], in[b], outb[b]) == TERSE_OK, "blocking");
            RCHECK(ctx, memcmp(out[b], outb[b], count[b] * sizeof(float)) == 0,
                   "step %d, %s: non-blocking with the thread differs from blocking", s, codecs[b]);
            RCHECK(ctx, test_same_everywhere(c, out[b], count[b] * sizeof(float)), "replicas differ");
        }
    }
    /* a busy handle stays busy until the caller reaps its step, however fast it ended */
    terse_request_t *r;
    RCHECK(ctx, terse_compressed_allreduce_start(h[1], in[1], out[1], &r) == TERSE_OK, "start");
    usleep(200000);
    size_t sz = terse_compressed_state_size(h[1]);
    void *state = malloc(sz);
    RCHECK(ctx, terse_compressed_save(h[1], state, sz) == TERSE_ERR_BUSY, "save before wait");
    RCHECK(ctx, terse_request_wait(r) == TERSE_OK, "wait");
    RCHECK(ctx, terse_compressed_save(h[1], state, sz) == TERSE_OK, "save after wait");
    free(state);
    for (int b = 0; b < B; b++) {
        terse_compressed_destroy(h[b]);
        terse_compressed_destroy(hb[b]);
        free(in[b]), free(out[b]), free(outb[b]);
    }
    terse_comm_destroy(ref);
    terse_comm_destroy(c);
    return 0;
}

/* ---- many requests on two communicators, random wait order ---------------- */
static int body_many(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c[2];
    RCHECK(ctx, mk(ctx, 1, &c[0]) == TERSE_OK, "create");
    RCHECK(ctx, terse_comm_dup(c[0], &c[1]) == TERSE_OK, "dup");
    enum { K = 16 };
    size_t count = 20000;
    double *buf[K];
    terse_request_t *req[K];
    int n = ctx->size;
    unsigned seed = 7; /* the same order on every rank is not needed: waits are local */
    for (int round = 0; round < 5; round++) {
        for (int k = 0; k < K; k++) {
            buf[k] = malloc(count * sizeof(double));
            RCHECK(ctx, buf[k] != NULL, "malloc");
            for (size_t i = 0; i < count; i++)
                buf[k][i] = ctx->rank * 3 + k + (double)(i % 5);
            RCHECK(ctx, terse_allreduce_start(c[k % 2], buf[k], buf[k], count, TERSE_FLOAT64, TERSE_SUM, &req[k]) ==
                            TERSE_OK, "start %d", k);
        }
        int order[K];
        for (int k = 0; k < K; k++)
            order[k] = k;
        seed = seed * 1103515245u + 12345u + (unsigned)ctx->rank;
        for (int k = K - 1; k > 0; k--) {
            seed = seed * 1103515245u + 12345u;
            int j = (int)(seed % (unsigned)(k + 1)), t = order[k];
            order[k] = order[j], order[j] = t;
        }
        for (int i = 0; i < K; i++) {
            int k = order[i];
            RCHECK(ctx, terse_request_wait(req[k]) == TERSE_OK, "wait %d", k);
            for (size_t j = 0; j < count; j += 101) {
                double want = 0;
                for (int q = 0; q < n; q++)
                    want += q * 3 + k + (double)(j % 5);
                RCHECK(ctx, buf[k][j] == want, "request %d: %g, want %g", k, buf[k][j], want);
            }
            free(buf[k]);
        }
    }
    terse_comm_destroy(c[1]);
    terse_comm_destroy(c[0]);
    return 0;
}

/* ---- a plan restarted 300 times with changing contents -------------------- */
static int body_plan(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, 1, &c) == TERSE_OK, "create");
    int64_t v[64];
    terse_request_t *p;
    RCHECK(ctx, terse_allreduce_init(c, v, v, 64, TERSE_INT64, TERSE_SUM, &p) == TERSE_OK, "init");
    int n = ctx->size;
    for (int it = 0; it < 300; it++) {
        for (int i = 0; i < 64; i++)
            v[i] = (int64_t)it * 1000 + ctx->rank + i;
        RCHECK(ctx, terse_start(p) == TERSE_OK, "start %d", it);
        if (it % 50 == 0) /* ended or not, it is active until waited for */
            RCHECK(ctx, terse_start(p) == TERSE_ERR_BUSY, "second start");
        RCHECK(ctx, terse_request_wait(p) == TERSE_OK, "wait %d", it);
        int64_t want = (int64_t)n * (it * 1000 + 5) + (int64_t)n * (n - 1) / 2;
        RCHECK(ctx, v[5] == want, "iteration %d: %lld, want %lld", it, (long long)v[5], (long long)want);
    }
    RCHECK(ctx, terse_request_free(p) == TERSE_OK, "free");
    terse_comm_destroy(c);
    return 0;
}

/* ---- a peer killed while the thread drives: reported on every survivor ---- */
static int body_kill(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, 1, &c) == TERSE_OK, "create");
    size_t count = (size_t)1 << 20;
    float *x = calloc(count, sizeof(float));
    RCHECK(ctx, x != NULL, "malloc");
    RCHECK(ctx, terse_allreduce(c, x, x, count, TERSE_FLOAT32, TERSE_SUM) == TERSE_OK, "warm-up");
    if (ctx->rank == ctx->size - 1)
        raise(SIGKILL);
    terse_status_t st = TERSE_OK;
    double t0 = terse_launch_now();
    for (int it = 0; it < 50 && st == TERSE_OK; it++) {
        terse_request_t *r;
        st = terse_allreduce_start(c, x, x, count, TERSE_FLOAT32, TERSE_SUM, &r);
        if (st == TERSE_OK) {
            compute(0.01);
            st = terse_request_wait(r);
        }
    }
    RCHECK(ctx, st == TERSE_ERR_PEER_FAILED, "got %s, want PEER_FAILED", terse_strerror(st));
    RCHECK(ctx, terse_launch_now() - t0 < 30, "took %.1f s", terse_launch_now() - t0);
    terse_comm_destroy(c);
    free(x);
    return 0;
}

/* ---- runner ---------------------------------------------------------------- */
static void run(int n, double limit, terse_rank_fn fn, void *arg, int victim)
{
    int codes[16];
    if (terse_launch(n, limit, fn, arg, codes) < 0)
        return;
    for (int r = 0; r < n; r++) {
        int want = r == victim ? TERSE_LAUNCH_SIGNAL + SIGKILL : 0;
        if (codes[r] != want)
            fprintf(stderr, "  %d ranks over %s: rank %d exited with %d (want %d)\n", n, g_transport, r, codes[r],
                    want);
        CU_ASSERT_EQUAL(codes[r], want);
    }
}

/* TERSE_TEST_QUICK (the emulated soft-RoCE guest): the smaller rank counts only */
static int quick(void)
{
    const char *q = getenv("TERSE_TEST_QUICK");
    return q && *q && *q != '0';
}
static int on = 1, off = 0;
static void t_overlap(void)
{
    run(2, 300, body_overlap, &on, -1);
    if (!quick())
        run(4, 300, body_overlap, &on, -1);
}
static void t_control(void) { run(2, 300, body_overlap, &off, -1); }
static void t_compressed(void)
{
    for (int n = 1; n <= (quick() ? 3 : 4); n++)
        run(n, 600, body_compressed, NULL, -1);
}
static void t_many(void)
{
    run(2, 300, body_many, NULL, -1);
    if (!quick())
        run(3, 300, body_many, NULL, -1);
}
static void t_plan(void)
{
    run(1, 120, body_plan, NULL, -1);
    run(quick() ? 2 : 4, 600, body_plan, NULL, -1);
}
static void t_kill(void) { run(3, 120, body_kill, NULL, 2); }

int main(void)
{
    const char *list = getenv("TERSE_TEST_TRANSPORTS");
    static char buf[128];
    snprintf(buf, sizeof(buf), "%s", list && *list ? list : "tcp");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    int failures = 0;
    for (char *save, *tp = strtok_r(buf, ",", &save); tp; tp = strtok_r(NULL, ",", &save)) {
        g_transport = tp;
        char name[64];
        snprintf(name, sizeof(name), "progress thread over %s", tp);
        CU_pSuite s = CU_add_suite(name, NULL, NULL);
        CU_add_test(s, "16 MiB allreduce ends while the caller computes (2, 4 ranks; quick: 2)", t_overlap);
        CU_add_test(s, "control: without the thread it does not (2 ranks)", t_control);
        CU_add_test(s, "3 compressed buckets in flight = blocking, bit for bit; busy until waited (1-4 ranks; quick: 1-3)",
                    t_compressed);
        CU_add_test(s, "16 requests on 2 communicators, random wait order (2, 3 ranks; quick: 2)", t_many);
        CU_add_test(s, "a plan started 300 times; second start busy (1, 4 ranks; quick: 1, 2)", t_plan);
        CU_add_test(s, "kill -9 of a peer: PEER_FAILED on the survivors (3 ranks)", t_kill);
        CU_basic_run_suite(s);
        failures += (int)CU_get_number_of_tests_failed();
    }
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
