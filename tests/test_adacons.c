/*
 * test_adacons.c - AdaCons aggregation against a reference computed on every
 * rank from all ranks' gradients (fixed seeds, 1-8 ranks, orders that change
 * between steps so the inverse permutation matters), ties broken by rank,
 * the guard and fallback (zero, opposite and opposing gradients), save/load
 * resuming bit for bit, mismatched parameters, NaN input, start = blocking,
 * and the unbiased combination over C_nat. Over each transport in
 * TERSE_TEST_TRANSPORTS.
 */
#include "launcher.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *g_transport = "tcp";
enum { D = 300 };

static terse_status_t mk(const terse_launch_ctx_t *ctx, terse_comm_t **comm)
{
    terse_comm_params_t p = TERSE_COMM_PARAMS_INIT;
    p.rank = ctx->rank, p.size = ctx->size, p.root_addr = ctx->root, p.secret = ctx->secret;
    p.transport = g_transport, p.timeout_sec = 60, p.boot_timeout_sec = 120;
    return terse_comm_create(&p, comm);
}

static double unit(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (double)((x ^ (x >> 31)) >> 11) * 0x1p-53;
}

typedef enum { G_RANDOM, G_SAME, G_ZERO, G_OPPOSITE, G_ONE_AGAINST } kind_t;

/* Rank j's gradient at step t: a shared direction plus rank noise, so the
 * coefficients are positive and their order changes from step to step. */
static void grad(kind_t kind, int j, int t, float *g)
{
    for (int k = 0; k < D; k++) {
        double base = 1 + unit((uint64_t)k * 7919u);
        switch (kind) {
        case G_RANDOM: g[k] = (float)(base + 1.5 * (unit(((uint64_t)t * 64 + (uint64_t)j) * 100003u + (uint64_t)k) - 0.5)); break;
        case G_SAME: g[k] = (float)base; break;
        case G_ZERO: g[k] = 0; break;
        case G_OPPOSITE: g[k] = (float)(j % 2 ? -base : base); break;
        case G_ONE_AGAINST: g[k] = (float)(j == 0 ? -base : base); break;
        }
    }
}

/* The reference step from every rank's gradient, in double. */
typedef struct {
    double mu[16];
    int init;
} ref_t;

static int ref_step(ref_t *ref, kind_t kind, int n, int t, double beta, int rescale, double *out, double *alpha_out)
{
    static float g[16][D];
    double S[D] = {0}, a[16], norm[16], eps = 1e-8, mean_norm = 0;
    for (int j = 0; j < n; j++) {
        grad(kind, j, t, g[j]);
        for (int k = 0; k < D; k++)
            S[k] += g[j][k];
    }
    for (int j = 0; j < n; j++) {
        double dot = 0, sq = 0;
        for (int k = 0; k < D; k++)
            dot += S[k] * g[j][k], sq += (double)g[j][k] * g[j][k];
        norm[j] = sqrt(sq);
        a[j] = dot / n / (norm[j] + eps);
        mean_norm += norm[j] / n;
    }
    int order[16];
    for (int j = 0; j < n; j++)
        order[j] = j;
    for (int x = 1; x < n; x++) /* insertion sort: stable, so ties stay in rank order */
        for (int y = x; y > 0 && a[order[y]] < a[order[y - 1]]; y--) {
            int tmp = order[y];
            order[y] = order[y - 1], order[y - 1] = tmp;
        }
    double alpha[16], sum = 0;
    int neg = 0;
    for (int k = 0; k < n; k++) {
        ref->mu[k] = ref->init ? beta * ref->mu[k] + (1 - beta) * a[order[k]] : a[order[k]];
        alpha[order[k]] = ref->mu[k];
    }
    ref->init = 1;
    for (int j = 0; j < n; j++)
        sum += alpha[j], neg |= alpha[j] < 0;
    int fb = !(sum > eps) || neg;
    for (int j = 0; j < n; j++)
        alpha_out[j] = fb ? 1.0 / n : alpha[j] / sum;
    for (int k = 0; k < D; k++) {
        out[k] = 0;
        if (fb) {
            out[k] = S[k] / n;
            continue;
        }
        for (int j = 0; j < n; j++)
            out[k] += norm[j] ? alpha_out[j] * g[j][k] / norm[j] : 0;
        if (rescale)
            out[k] *= mean_norm;
    }
    return fb;
}

typedef struct {
    kind_t kinds[8];
    int nsteps, rescale, nonblocking;
    double beta;
} ref_arg_t;

static int body_ref(const terse_launch_ctx_t *ctx, void *argp)
{
    const ref_arg_t *arg = argp;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size, r = ctx->rank;
    terse_adacons_params_t ap;
    terse_adacons_params_init(&ap);
    ap.beta = arg->beta, ap.rescale = arg->rescale;
    terse_adacons_t *h;
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &h) == TERSE_OK, "adacons_create");
    float g[D], out[D];
    double want[D], alpha[16];
    ref_t ref = {{0}, 0};
    for (int t = 0; t < arg->nsteps; t++) {
        kind_t kind = arg->kinds[t % 8];
        grad(kind, r, t, g);
        terse_status_t st;
        if (arg->nonblocking) {
            terse_request_t *req;
            st = terse_adacons_step_start(h, g, out, &req);
            if (st == TERSE_OK) {
                terse_request_t *again;
                RCHECK(ctx, terse_adacons_step_start(h, g, out, &again) == TERSE_ERR_BUSY, "a second start while one is in flight");
                st = terse_request_wait(req);
            }
        } else {
            st = terse_adacons_step(h, g, out);
        }
        RCHECK(ctx, st == TERSE_OK, "step %d: %s", t, terse_strerror(st));
        int fb = ref_step(&ref, kind, n, t, arg->beta, arg->rescale, want, alpha);
        terse_adacons_stats_t s;
        RCHECK(ctx, terse_adacons_stats(h, &s) == TERSE_OK, "stats");
        RCHECK(ctx, s.fallback == fb, "step %d: fallback %d, reference %d", t, s.fallback, fb);
        for (int j = 0; j < n; j++)
            RCHECK(ctx, fabs(s.alpha[j] - alpha[j]) <= 1e-6 * (1 + fabs(alpha[j])), "step %d alpha[%d] = %.9g, want %.9g",
                   t, j, s.alpha[j], alpha[j]);
        double err = 0, mag = 0;
        for (int k = 0; k < D; k++)
            err += (out[k] - want[k]) * (out[k] - want[k]), mag += want[k] * want[k];
        RCHECK(ctx, sqrt(err) <= 1e-5 * (1 + sqrt(mag)), "step %d: |out - ref| = %g (|ref| %g)", t, sqrt(err), sqrt(mag));
        RCHECK(ctx, test_same_everywhere(c, out, sizeof(out)), "step %d: ranks differ", t);
    }
    terse_adacons_destroy(h);
    terse_comm_destroy(c);
    return 0;
}

static void run(int n, terse_rank_fn fn, void *arg)
{
    int codes[16];
    if (terse_launch(n, 180, fn, arg, codes) < 0)
        return;
    for (int r = 0; r < n; r++) {
        if (codes[r])
            fprintf(stderr, "  %d ranks over %s: rank %d exited with %d\n", n, g_transport, r, codes[r]);
        CU_ASSERT_EQUAL(codes[r], 0);
    }
}

static void t_reference(void)
{
    static const int sizes[] = {1, 2, 3, 4, 5, 8};
    ref_arg_t a = {{G_RANDOM, G_RANDOM, G_RANDOM, G_RANDOM, G_RANDOM, G_RANDOM, G_RANDOM, G_RANDOM}, 12, 0, 0, 0.5};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        run(sizes[i], body_ref, &a);
    a.rescale = 1, a.beta = 0.99;
    run(4, body_ref, &a);
}

static void t_ties(void)
{
    /* distinct coefficients, then every rank the same gradient: the tied
     * ranks take mu's entries in rank order */
    ref_arg_t a = {{G_RANDOM, G_SAME, G_RANDOM, G_SAME, G_SAME, G_RANDOM, G_SAME, G_RANDOM}, 8, 0, 0, 0.5};
    run(3, body_ref, &a);
    run(5, body_ref, &a);
}

static void t_fallback(void)
{
    ref_arg_t zero = {{G_ZERO, G_RANDOM, G_ZERO, G_RANDOM, G_ZERO, G_ZERO, G_RANDOM, G_ZERO}, 8, 0, 0, 0.5};
    run(3, body_ref, &zero);
    ref_arg_t opp = {{G_OPPOSITE, G_RANDOM, G_OPPOSITE, G_RANDOM, G_RANDOM, G_OPPOSITE, G_RANDOM, G_RANDOM}, 8, 0, 0, 0.0};
    run(2, body_ref, &opp);
    run(4, body_ref, &opp);
    ref_arg_t against = {{G_ONE_AGAINST, G_RANDOM, G_RANDOM, G_ONE_AGAINST, G_RANDOM, G_RANDOM, G_RANDOM, G_RANDOM}, 8, 0, 0, 0.5};
    run(4, body_ref, &against);
}

static void t_nonblocking(void)
{
    ref_arg_t a = {{G_RANDOM, G_RANDOM, G_SAME, G_RANDOM, G_RANDOM, G_RANDOM, G_RANDOM, G_RANDOM}, 10, 1, 1, 0.9};
    run(1, body_ref, &a);
    run(3, body_ref, &a);
}

/* ---- save/load, mismatch, NaN, compressed ------------------------------------- */

static int body_resume(const terse_launch_ctx_t *ctx, void *arg)
{
    const char *codec = arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    terse_adacons_params_t ap;
    terse_adacons_params_init(&ap);
    ap.beta = 0.7, ap.codec_combine = codec;
    terse_adacons_t *h, *h2;
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &h) == TERSE_OK, "create");
    float g[D], a[2][D], b[2][D];
    for (int t = 0; t < 3; t++) {
        grad(G_RANDOM, ctx->rank, t, g);
        RCHECK(ctx, terse_adacons_step(h, g, a[0]) == TERSE_OK, "step %d", t);
    }
    size_t len = terse_adacons_state_size(h);
    char *buf = malloc(len);
    RCHECK(ctx, terse_adacons_save(h, buf, len) == TERSE_OK, "save");
    for (int t = 3; t < 5; t++) {
        grad(G_RANDOM, ctx->rank, t, g);
        RCHECK(ctx, terse_adacons_step(h, g, a[t - 3]) == TERSE_OK, "step %d", t);
    }
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &h2) == TERSE_OK, "create 2");
    RCHECK(ctx, terse_adacons_load(h2, buf, len - 1) == TERSE_ERR_INVALID_ARG, "short checkpoint");
    buf[len / 2] ^= 1;
    RCHECK(ctx, terse_adacons_load(h2, buf, len) == TERSE_ERR_INVALID_ARG, "corrupt checkpoint");
    buf[len / 2] ^= 1;
    RCHECK(ctx, terse_adacons_load(h2, buf, len) == TERSE_OK, "load");
    for (int t = 3; t < 5; t++) {
        grad(G_RANDOM, ctx->rank, t, g);
        RCHECK(ctx, terse_adacons_step(h2, g, b[t - 3]) == TERSE_OK, "step %d", t);
    }
    RCHECK(ctx, !memcmp(a, b, sizeof(a)), "resumed steps differ from the original ones");
    terse_adacons_stats_t s1, s2;
    terse_adacons_stats(h, &s1), terse_adacons_stats(h2, &s2);
    RCHECK(ctx, s1.steps == 5 && s2.steps == 5, "steps %llu %llu", (unsigned long long)s1.steps,
           (unsigned long long)s2.steps);
    free(buf);
    terse_adacons_destroy(h), terse_adacons_destroy(h2);
    terse_comm_destroy(c);
    return 0;
}

static void t_resume(void)
{
    run(3, body_resume, NULL);
    run(3, body_resume, "cnat8");
}

static int body_nan(const terse_launch_ctx_t *ctx, void *arg)
{
    const char *codec = arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    terse_adacons_params_t ap;
    terse_adacons_params_init(&ap);
    ap.codec_sum = codec;
    terse_adacons_t *h;
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &h) == TERSE_OK, "create");
    float g[D], out[D], first[D];
    grad(G_RANDOM, ctx->rank, 0, g);
    RCHECK(ctx, terse_adacons_step(h, g, first) == TERSE_OK, "step 0");
    grad(G_RANDOM, ctx->rank, 1, g);
    if (ctx->rank == ctx->size - 1)
        g[3] = NAN;
    terse_status_t st = terse_adacons_step(h, g, out);
    RCHECK(ctx, st == TERSE_ERR_INVALID_ARG, "NaN step: %s", terse_strerror(st));
    RCHECK(ctx, terse_comm_error(c, NULL) == TERSE_OK, "the communicator keeps an error");
    grad(G_RANDOM, ctx->rank, 1, g);
    RCHECK(ctx, terse_adacons_step(h, g, out) == TERSE_OK, "step after the NaN");
    terse_adacons_stats_t s;
    terse_adacons_stats(h, &s);
    RCHECK(ctx, s.steps == 2, "steps %llu", (unsigned long long)s.steps);
    RCHECK(ctx, terse_allreduce(c, g, out, D, TERSE_FLOAT32, TERSE_SUM) == TERSE_OK, "allreduce after");
    terse_adacons_destroy(h);
    terse_comm_destroy(c);
    return 0;
}

static int body_mismatch(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    terse_adacons_params_t ap;
    terse_adacons_params_init(&ap);
    if (ctx->rank == 0)
        ap.beta = 0.9;
    terse_adacons_t *h;
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &h) == TERSE_OK, "create");
    float g[D], out[D];
    grad(G_RANDOM, ctx->rank, 0, g);
    terse_status_t st = terse_adacons_step(h, g, out);
    RCHECK(ctx, st == TERSE_ERR_MISMATCH, "got %s", terse_strerror(st));
    terse_adacons_destroy(h);
    terse_comm_destroy(c);
    return 0;
}

static int body_invalid(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    terse_adacons_params_t ap;
    terse_adacons_t *h = NULL;
    terse_adacons_params_init(&ap), ap.beta = 1;
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &h) == TERSE_ERR_INVALID_ARG, "beta 1");
    terse_adacons_params_init(&ap), ap.eps = 0;
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &h) == TERSE_ERR_INVALID_ARG, "eps 0");
    terse_adacons_params_init(&ap), ap.codec_sum = "nope";
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &h) == TERSE_ERR_INVALID_ARG, "codec");
    terse_adacons_params_init(&ap), ap.codec_sum = "cnat8";
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &h) == TERSE_OK, "good create");
    float g[D] = {0}, out[D];
    terse_request_t *req;
    RCHECK(ctx, terse_adacons_step_start(h, g, out, &req) == TERSE_ERR_UNSUPPORTED, "start with a codec");
    RCHECK(ctx, terse_adacons_step(h, NULL, out) == TERSE_ERR_INVALID_ARG, "NULL input");
    terse_adacons_destroy(h);
    terse_comm_destroy(c);
    return 0;
}

static void t_errors(void)
{
    run(3, body_nan, NULL);
    run(3, body_nan, "cnat8");
    run(3, body_mismatch, NULL);
    run(2, body_invalid, NULL);
}

/* A dense first allreduce and an unbiased code on the second (no error
 * feedback): the mean of many steps on the same gradients is the dense G. */
static int body_unbiased(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    terse_adacons_params_t ap;
    terse_adacons_params_init(&ap);
    terse_adacons_t *dense, *coded;
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &dense) == TERSE_OK, "create");
    ap.codec_combine = "cnat8", ap.error_feedback = -1, ap.seed = 5;
    RCHECK(ctx, terse_adacons_create(c, D, &ap, &coded) == TERSE_OK, "create coded");
    float g[D], want[D], out[D];
    double mean[D] = {0}, var[D] = {0};
    grad(G_RANDOM, ctx->rank, 0, g);
    RCHECK(ctx, terse_adacons_step(dense, g, want) == TERSE_OK, "dense");
    enum { K = 400 };
    for (int t = 0; t < K; t++) {
        RCHECK(ctx, terse_adacons_step(coded, g, out) == TERSE_OK, "coded %d", t);
        for (int k = 0; k < D; k++)
            mean[k] += out[k] / K, var[k] += (double)(out[k] - want[k]) * (out[k] - want[k]) / K;
    }
    double worst = 0;
    int exact = 1;
    for (int k = 0; k < D; k++) {
        double sd = sqrt(var[k] / K); /* standard error of the mean */
        exact &= var[k] == 0;
        worst = fmax(worst, fabs(mean[k] - want[k]) / (sd + 1e-12));
    }
    RCHECK(ctx, !exact, "C_nat left every value exact: the test proves nothing");
    RCHECK(ctx, worst < 6, "mean of the C_nat steps is %.1f standard errors from the dense G", worst);
    terse_adacons_destroy(dense), terse_adacons_destroy(coded);
    terse_comm_destroy(c);
    return 0;
}

static void t_unbiased(void) { run(4, body_unbiased, NULL); }

static void add(CU_pSuite s, const char *name, CU_TestFunc fn)
{
    const char *f = getenv("TERSE_TEST_FILTER");
    if (!f || !*f || strstr(name, f))
        CU_add_test(s, name, fn);
}

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
        snprintf(name, sizeof(name), "adacons over %s", tp);
        CU_pSuite s = CU_add_suite(name, NULL, NULL);
        add(s, "against a reference from all gradients (1-5, 8 ranks; rescale)", t_reference);
        add(s, "ties take the momentum in rank order (3, 5 ranks)", t_ties);
        add(s, "guard and fallback: zero, opposite, one against the rest", t_fallback);
        add(s, "step_start = the reference; busy while in flight", t_nonblocking);
        add(s, "save/load resumes bit for bit (dense, C_nat); corrupt checkpoints refused", t_resume);
        add(s, "NaN: INVALID_ARG everywhere, usable after; mismatch; bad parameters", t_errors);
        add(s, "dense sum + C_nat combine is unbiased (400 steps)", t_unbiased);
        CU_basic_run_suite(s);
        failures += (int)CU_get_number_of_tests_failed();
    }
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
