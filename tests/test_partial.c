/*
 * test_partial.c - straggler-tolerant partial allreduce and gradient coding:
 * decoding exactness for every responder set (both schemes); the contributor
 * set, staleness and result identical on every rank under random delays, and
 * the result exactly the sum of that step's contributions of the set (a late
 * one never leaks into a later step); the staleness bound; fold-in conserves
 * the sum; the 1-bit gradient-coded step is unbiased; slow ranks do not hold
 * the others up; a killed rank is PEER_FAILED everywhere; bad parameters are
 * clear errors. Over each transport in TERSE_TEST_TRANSPORTS.
 */
#include "launcher.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *g_transport = "tcp";
static int g_quick;

static terse_status_t mk(const terse_launch_ctx_t *ctx, terse_comm_t **comm)
{
    terse_comm_params_t p = TERSE_COMM_PARAMS_INIT;
    p.rank = ctx->rank, p.size = ctx->size, p.root_addr = ctx->root, p.secret = ctx->secret;
    p.transport = g_transport, p.timeout_sec = 60, p.boot_timeout_sec = 120, p.progress_thread = 1;
    return terse_comm_create(&p, comm);
}

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

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

/* ---- gradient coding, alone ------------------------------------------------ */

static int in(const uint64_t *set, int i) { return (int)((set[i / 64] >> (i % 64)) & 1u); }

/* Every responder set of size n - s (and, fractional, every superset too)
 * decodes sum_j g_j from the coded c_i. */
static void check_scheme(int n, int s, terse_gc_scheme_t scheme)
{
    terse_gc_t *gc;
    CU_ASSERT_EQUAL_FATAL(terse_gc_create(n, s, scheme, 42, &gc), TERSE_OK);
    enum { D = 8 };
    double g[16][D], c[16][D], want[D] = {0}, a[16];
    uint64_t seed = (uint64_t)(n * 100 + s);
    for (int j = 0; j < n; j++)
        for (int k = 0; k < D; k++)
            want[k] += g[j][k] = (double)(rng(&seed) % 2001) / 1000.0 - 1.0;
    for (int i = 0; i < n; i++) {
        int parts[16];
        double co[16];
        CU_ASSERT_EQUAL_FATAL(terse_gc_assignment(gc, i, parts, co), TERSE_OK);
        for (int k = 0; k < D; k++) {
            c[i][k] = 0;
            for (int q = 0; q <= s; q++)
                c[i][k] += co[q] * g[parts[q]][k];
        }
    }
    int checked = 0;
    for (uint64_t mask = 0; mask < (1ull << n); mask++) {
        int m = __builtin_popcountll(mask);
        if (m < n - s || (scheme == TERSE_GC_CYCLIC && m != n - s))
            continue;
        uint64_t set[1] = {mask};
        for (int flags = 0; flags <= TERSE_GC_AVERAGE; flags++) {
            terse_status_t st = terse_gc_decode_vector(gc, set, flags, a);
            CU_ASSERT_EQUAL(st, TERSE_OK);
            if (st != TERSE_OK) {
                fprintf(stderr, "  n %d s %d scheme %d set %llx: %s\n", n, s, scheme, (unsigned long long)mask,
                        terse_strerror(st));
                continue;
            }
            for (int k = 0; k < D; k++) {
                double v = 0;
                for (int i = 0; i < n; i++) {
                    if (!in(set, i))
                        CU_ASSERT_EQUAL(a[i], 0.0);
                    v += a[i] * c[i][k];
                }
                if (fabs(v - want[k]) > 1e-9 * (1 + fabs(want[k])))
                    fprintf(stderr, "  n %d s %d scheme %d set %llx: %.17g != %.17g\n", n, s, scheme,
                            (unsigned long long)mask, v, want[k]);
                CU_ASSERT(fabs(v - want[k]) <= 1e-9 * (1 + fabs(want[k])));
            }
            checked++;
        }
    }
    CU_ASSERT(checked > 0);
    /* too few responders cannot decode */
    if (s + 1 < n) {
        uint64_t few[1] = {(1ull << (n - s - 1)) - 1};
        if (scheme == TERSE_GC_CYCLIC || n - s - 1 < s + 1) /* fractional: some group has none */
            CU_ASSERT_EQUAL(terse_gc_decode_vector(gc, few, 0, a), TERSE_ERR_INVALID_ARG);
    }
    terse_gc_destroy(gc);
}

static void t_gc_exact(void)
{
    for (int n = 1; n <= 8; n++)
        for (int s = 0; s < n; s++) {
            check_scheme(n, s, TERSE_GC_CYCLIC);
            if (n % (s + 1) == 0)
                check_scheme(n, s, TERSE_GC_FRACTIONAL);
        }
}

static void t_gc_invalid(void)
{
    terse_gc_t *gc = (terse_gc_t *)1;
    CU_ASSERT_EQUAL(terse_gc_create(4, 4, TERSE_GC_CYCLIC, 1, &gc), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(gc);
    CU_ASSERT_EQUAL(terse_gc_create(4, -1, TERSE_GC_CYCLIC, 1, &gc), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_gc_create(6, 3, TERSE_GC_FRACTIONAL, 1, &gc), TERSE_ERR_INVALID_ARG); /* 4 does not divide 6 */
    CU_ASSERT_EQUAL(terse_gc_create(0, 0, TERSE_GC_CYCLIC, 1, &gc), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_gc_create(4, 1, (terse_gc_scheme_t)9, 1, &gc), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_gc_create(4, 1, TERSE_GC_CYCLIC, 1, NULL), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL_FATAL(terse_gc_create(4, 1, TERSE_GC_CYCLIC, 1, &gc), TERSE_OK);
    int parts[2];
    double co[2], a[4];
    CU_ASSERT_EQUAL(terse_gc_assignment(gc, 4, parts, co), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_gc_decode_vector(gc, NULL, 0, a), TERSE_ERR_INVALID_ARG);
    terse_gc_destroy(gc);
}

/* ---- partial steps: agreement, exactness, no leaks ------------------------- */

typedef struct {
    terse_partial_policy_t policy;
    int quorum, max_stale, fold, steps, slow; /* slow: rank that is always slow (-1: random) */
    double deadline;
} agree_arg_t;

/* What rank m contributes at step t: small integers, so sums are exact. */
static float value(int m, uint64_t t, size_t i) { return (float)((t % 64) * 32 + (uint64_t)m + 1 + (i % 3)); }

static int body_agree(const terse_launch_ctx_t *ctx, void *argp)
{
    const agree_arg_t *arg = argp;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size, r = ctx->rank;
    terse_partial_params_t pp;
    terse_partial_params_init(&pp);
    pp.policy = arg->policy;
    pp.quorum = arg->quorum > 0 ? arg->quorum : (arg->quorum < 0 ? n + arg->quorum : 0);
    if (pp.policy == TERSE_PARTIAL_QUORUM && pp.quorum < 1)
        pp.quorum = 1;
    pp.deadline_sec = arg->deadline;
    pp.max_stale = arg->max_stale;
    pp.fold_late = arg->fold;
    pp.seed = 7;
    enum { COUNT = 1000 };
    terse_partial_t *p;
    terse_status_t st = terse_partial_create(c, COUNT, &pp, &p);
    RCHECK(ctx, st == TERSE_OK, "partial_create: %s", terse_strerror(st));
    float *x = malloc(sizeof(float) * COUNT), *y = malloc(sizeof(float) * COUNT);
    double in_total = 0, out_total = 0;
    uint64_t seed = 1000 + (uint64_t)r;
    int max_seen_stale = 0, forced = 0, partial_steps = 0;
    for (int t = 0; t < arg->steps; t++) {
        /* delays: random per step, or one rank always slow */
        int slow = arg->slow >= 0 ? r == arg->slow : rng(&seed) % 3 == 0;
        if (slow) {
            useconds_t us = (useconds_t)(arg->slow >= 0 ? 30000 : 2000 + rng(&seed) % 20000);
            if (rng(&seed) % 2) {
                usleep(us); /* cannot be cut short: its contribution may come late */
            } else {
                int decided;
                RCHECK(ctx, terse_partial_wait_decision(p, us * 1e-6, &decided) == TERSE_OK, "wait_decision");
            }
        }
        for (size_t i = 0; i < COUNT; i++)
            x[i] = value(r, (uint64_t)t, i);
        terse_partial_info_t info;
        st = terse_partial_allreduce(p, x, y, &info);
        RCHECK(ctx, st == TERSE_OK, "step %d: %s", t, terse_strerror(st));
        RCHECK(ctx, info.step == (uint64_t)(unsigned)t, "step %llu, want %d", (unsigned long long)info.step, t);
        for (size_t i = 0; i < COUNT; i++)
            in_total += x[i];
        /* exactly the set's contributions to this step */
        int k = 0;
        for (int m = 0; m < n; m++)
            k += TERSE_PARTIAL_IN(&info, m);
        RCHECK(ctx, k == info.contributors && k >= 1, "set has %d members, info says %d", k, info.contributors);
        RCHECK(ctx, info.included == TERSE_PARTIAL_IN(&info, r), "included %d", info.included);
        for (size_t i = 0; i < COUNT; i++) {
            float want = 0;
            for (int m = 0; m < n; m++)
                if (TERSE_PARTIAL_IN(&info, m))
                    want += value(m, (uint64_t)t, i);
            out_total += y[i];
            if (arg->fold)
                continue; /* a folded contribution comes with a later one: the sum is checked at the end */
            RCHECK(ctx, y[i] == want, "step %d y[%zu] = %g, want %g (set of %d: %llx; y %g %g %g; late %d)", t, i,
                   y[i], want, k, (unsigned long long)info.set[0], y[0], y[1], y[2], info.late);
        }
        if (arg->policy == TERSE_PARTIAL_QUORUM && !info.forced)
            RCHECK(ctx, k >= pp.quorum, "quorum %d, set %d", pp.quorum, k);
        if (arg->policy == TERSE_PARTIAL_ALL || info.forced)
            RCHECK(ctx, k == n, "full step with %d of %d", k, n);
        for (int m = 0; m < n; m++) {
            RCHECK(ctx, (info.staleness[m] == 0) == TERSE_PARTIAL_IN(&info, m), "staleness[%d] = %u", m,
                   info.staleness[m]);
            if ((int)info.staleness[m] > max_seen_stale)
                max_seen_stale = (int)info.staleness[m];
        }
        forced += info.forced;
        partial_steps += k < n;
        /* identical everywhere: set, staleness, result */
        uint64_t hv[3] = {test_fnv(info.set, 8 * (size_t)((n + 63) / 64)),
                          test_fnv(info.staleness, 4 * (size_t)n), test_fnv(y, sizeof(float) * COUNT)};
        RCHECK(ctx, test_same_everywhere(c, hv, sizeof(hv)), "step %d: ranks disagree", t);
    }
    if (arg->max_stale > 0)
        RCHECK(ctx, max_seen_stale <= arg->max_stale, "staleness %d beyond the bound %d", max_seen_stale,
               arg->max_stale);
    if (arg->fold) {
        /* nothing is lost: outputs plus what waits in the residuals = inputs */
        terse_partial_residual(p, x);
        double res = 0;
        for (size_t i = 0; i < COUNT; i++)
            res += x[i];
        double all[2] = {in_total, res}, sum[2];
        RCHECK(ctx, terse_allreduce(c, all, sum, 2, TERSE_FLOAT64, TERSE_SUM) == TERSE_OK, "allreduce");
        RCHECK(ctx, out_total + sum[1] == sum[0], "outputs %.0f + residuals %.0f != inputs %.0f", out_total, sum[1],
               sum[0]);
    }
    if (r == 0 && getenv("TERSE_TEST_VERBOSE"))
        fprintf(stderr, "  n %d policy %d: %d partial steps, %d forced, max staleness %d\n", n, arg->policy,
                partial_steps, forced, max_seen_stale);
    terse_partial_destroy(p);
    terse_comm_destroy(c);
    free(x);
    free(y);
    return 0;
}

static void agree_over(const int *sizes, int nsizes, agree_arg_t a)
{
    for (int i = 0; i < nsizes; i++)
        run(sizes[i], 240, body_agree, &a, -1);
}

static void t_agree(void)
{
    static const int full[] = {1, 2, 3, 5, 8}, quick[] = {1, 3, 4};
    const int *sz = g_quick ? quick : full;
    int ns = g_quick ? 3 : 5, steps = g_quick ? 12 : 25;
    agree_over(sz, ns, (agree_arg_t){TERSE_PARTIAL_QUORUM, -1, 0, 0, steps, -1, 0});
    agree_over(sz, ns, (agree_arg_t){TERSE_PARTIAL_DEADLINE, 0, 0, 0, steps, -1, 0.005});
    agree_over(sz, ns, (agree_arg_t){TERSE_PARTIAL_SOLO, 0, 0, 0, steps, -1, 0});
    agree_over(sz, ns, (agree_arg_t){TERSE_PARTIAL_MAJORITY, 0, 0, 0, steps, -1, 0});
    agree_over(sz, ns, (agree_arg_t){TERSE_PARTIAL_ALL, 0, 0, 0, steps, -1, 0});
}

static void t_stale(void)
{
    static const int sz[] = {3, 4};
    agree_over(sz, 2, (agree_arg_t){TERSE_PARTIAL_QUORUM, -1, 2, 0, g_quick ? 12 : 20, 1, 0});
}

static void t_fold(void)
{
    static const int sz[] = {2, 4};
    agree_over(sz, 2, (agree_arg_t){TERSE_PARTIAL_QUORUM, -1, 0, 1, g_quick ? 12 : 25, -1, 0});
    agree_over(sz + 1, 1, (agree_arg_t){TERSE_PARTIAL_SOLO, 0, 0, 1, g_quick ? 12 : 25, -1, 0});
}

/* ---- gradient coding inside the step ---------------------------------------- */

typedef struct {
    terse_gc_scheme_t scheme;
    int s;
    const char *codec;
    int steps;
} gc_arg_t;

/* Partition j's "gradient" at coordinate i. */
static float part_grad(int j, size_t i) { return (float)(((int)(i * 7 + (size_t)j * 13) % 17) - 8) * 0.125f; }

static int body_gc(const terse_launch_ctx_t *ctx, void *argp)
{
    const gc_arg_t *arg = argp;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size, r = ctx->rank, s = arg->s;
    terse_partial_params_t pp;
    terse_partial_params_init(&pp);
    pp.gc = arg->scheme, pp.gc_s = s, pp.codec = arg->codec, pp.seed = 11, pp.bucket = 64;
    enum { COUNT = 256 };
    terse_partial_t *p;
    terse_status_t st = terse_partial_create(c, COUNT, &pp, &p);
    RCHECK(ctx, st == TERSE_OK, "create: %s", terse_strerror(st));
    terse_gc_t *gc;
    RCHECK(ctx, terse_gc_create(n, s, arg->scheme, 11, &gc) == TERSE_OK, "gc");
    int parts[16];
    double co[16];
    RCHECK(ctx, terse_gc_assignment(gc, r, parts, co) == TERSE_OK, "assignment");
    float *x = malloc(sizeof(float) * COUNT), *y = malloc(sizeof(float) * COUNT);
    double *mean = calloc(COUNT, sizeof(double)), want[COUNT], scale = 0;
    for (size_t i = 0; i < COUNT; i++) {
        want[i] = 0;
        for (int j = 0; j < n; j++)
            want[i] += part_grad(j, i);
        x[i] = 0;
        for (int q = 0; q <= s; q++)
            x[i] += (float)(co[q] * part_grad(parts[q], i));
    }
    uint64_t seed = 77 + (uint64_t)r;
    int lossy = strcmp(arg->codec, "fp32") != 0, excluded = 0;
    for (int t = 0; t < arg->steps; t++) {
        if (rng(&seed) % 3 == 0) { /* a straggler this step */
            int decided;
            RCHECK(ctx, terse_partial_wait_decision(p, 0.02, &decided) == TERSE_OK, "wait");
        }
        terse_partial_info_t info;
        st = terse_partial_allreduce(p, x, y, &info);
        RCHECK(ctx, st == TERSE_OK, "step %d: %s", t, terse_strerror(st));
        RCHECK(ctx, info.contributors >= n - s, "%d responders", info.contributors);
        excluded += info.contributors < n;
        for (size_t i = 0; i < COUNT; i++) {
            if (!lossy)
                RCHECK(ctx, fabs(y[i] - want[i]) <= 1e-4 * (1 + fabs(want[i])), "step %d y[%zu] = %g, want %g",
                       t, i, y[i], want[i]);
            mean[i] += y[i];
        }
        RCHECK(ctx, test_same_everywhere(c, y, sizeof(float) * COUNT), "step %d: results differ", t);
    }
    if (lossy) {
        /* unbiased: the mean of the decoded steps approaches the true sum.
         * Per value, each code's variance is at most R^2 (R the bucket's max
         * of |c_i|), times the decoding coefficients squared. */
        double amax = 0;
        for (size_t i = 0; i < COUNT; i++)
            amax = fmax(amax, fabs(x[i]));
        RCHECK(ctx, terse_allreduce(c, &amax, &scale, 1, TERSE_FLOAT64, TERSE_MAX) == TERSE_OK, "max");
        double bound = 6 * scale * sqrt((double)n) * (s + 1) / sqrt((double)arg->steps), worst = 0;
        for (size_t i = 0; i < COUNT; i++)
            worst = fmax(worst, fabs(mean[i] / arg->steps - want[i]));
        RCHECK(ctx, worst <= bound, "biased: worst |mean - sum| = %g beyond %g", worst, bound);
        RCHECK(ctx, worst > 0, "a 1-bit code with no error at all proves nothing");
    }
    if (r == 0 && getenv("TERSE_TEST_VERBOSE"))
        fprintf(stderr, "  gc n %d s %d %s: %d of %d steps without everyone\n", n, s, arg->codec, excluded, arg->steps);
    terse_gc_destroy(gc);
    terse_partial_destroy(p);
    terse_comm_destroy(c);
    free(x), free(y), free(mean);
    return 0;
}

static void t_gc_step(void)
{
    int steps = g_quick ? 15 : 30;
    run(4, 240, body_gc, &(gc_arg_t){TERSE_GC_CYCLIC, 1, "fp32", steps}, -1);
    run(4, 240, body_gc, &(gc_arg_t){TERSE_GC_FRACTIONAL, 1, "fp32", steps}, -1);
    if (!g_quick) {
        run(6, 240, body_gc, &(gc_arg_t){TERSE_GC_CYCLIC, 2, "fp32", steps}, -1);
        run(6, 240, body_gc, &(gc_arg_t){TERSE_GC_FRACTIONAL, 2, "fp32", steps}, -1);
    }
}

static void t_gc_unbiased(void)
{
    int steps = g_quick ? 100 : 300;
    run(4, 240, body_gc, &(gc_arg_t){TERSE_GC_CYCLIC, 1, "sign1", steps}, -1);
    run(4, 240, body_gc, &(gc_arg_t){TERSE_GC_FRACTIONAL, 1, "sign1", steps}, -1);
}

/* ---- a slow rank does not hold the others up --------------------------------- */

static int body_tolerant(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size, slow = n - 1;
    terse_partial_params_t pp;
    terse_partial_params_init(&pp);
    pp.policy = TERSE_PARTIAL_QUORUM, pp.quorum = n - 1, pp.lookahead = 3;
    terse_partial_t *p;
    RCHECK(ctx, terse_partial_create(c, 4096, &pp, &p) == TERSE_OK, "create");
    float *x = calloc(4096, sizeof(float)), *y = malloc(4096 * sizeof(float));
    RCHECK(ctx, terse_barrier(c) == TERSE_OK, "barrier");
    double t0 = terse_launch_now();
    if (ctx->rank == slow)
        sleep(2); /* stuck in its "backward pass", not in terse: its progress thread answers */
    for (int t = 0; t < 3; t++) {
        terse_partial_info_t info;
        RCHECK(ctx, terse_partial_allreduce(p, x, y, &info) == TERSE_OK, "step %d", t);
        if (ctx->rank == slow) {
            RCHECK(ctx, !info.included && info.late, "step %d: included %d late %d", t, info.included, info.late);
        } else {
            RCHECK(ctx, !TERSE_PARTIAL_IN(&info, slow) && info.contributors == n - 1, "step %d: set of %d", t,
                   info.contributors);
        }
    }
    double took = terse_launch_now() - t0;
    if (ctx->rank != slow)
        RCHECK(ctx, took < 1.5, "3 steps took %.2f s: they waited for the slow rank (2 s)", took);
    RCHECK(ctx, terse_partial_behind(p) == 0, "behind");
    terse_partial_destroy(p);
    RCHECK(ctx, terse_barrier(c) == TERSE_OK, "barrier after");
    terse_comm_destroy(c);
    free(x), free(y);
    return 0;
}

static void t_tolerant(void) { run(3, 120, body_tolerant, NULL, -1); }

/* ---- a rank dies in the middle ---------------------------------------------- */

static int body_kill(const terse_launch_ctx_t *ctx, void *arg)
{
    int victim = *(int *)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    terse_partial_params_t pp;
    terse_partial_params_init(&pp);
    pp.policy = TERSE_PARTIAL_QUORUM, pp.quorum = ctx->size - 1;
    terse_partial_t *p;
    RCHECK(ctx, terse_partial_create(c, 1 << 16, &pp, &p) == TERSE_OK, "create");
    float *x = calloc(1 << 16, sizeof(float)), *y = malloc(sizeof(float) << 16);
    terse_status_t st = TERSE_OK;
    double t0 = terse_launch_now();
    for (int t = 0; t < 200 && st == TERSE_OK; t++) {
        if (t == 5 && ctx->rank == victim)
            raise(SIGKILL);
        st = terse_partial_allreduce(p, x, y, NULL);
    }
    RCHECK(ctx, st == TERSE_ERR_PEER_FAILED, "got %s, want PEER_FAILED", terse_strerror(st));
    RCHECK(ctx, terse_launch_now() - t0 < 30, "took %.1f s", terse_launch_now() - t0);
    terse_partial_destroy(p);
    terse_comm_destroy(c);
    free(x), free(y);
    return 0;
}

static void t_kill(void)
{
    int coord = 0, member = 2;
    run(3, 120, body_kill, &member, member);
    run(3, 120, body_kill, &coord, coord);
}

/* ---- bad parameters ------------------------------------------------------------ */

static int body_invalid(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size;
    terse_partial_t *p = (terse_partial_t *)1;
    terse_partial_params_t pp;
#define BAD_CASE(what, stmt)                                                                       \
    do {                                                                                           \
        terse_partial_params_init(&pp);                                                            \
        stmt;                                                                                      \
        terse_status_t st_ = terse_partial_create(c, 100, &pp, &p);                                \
        RCHECK(ctx, st_ == TERSE_ERR_INVALID_ARG && p == NULL, "%s: %s", what, terse_strerror(st_)); \
    } while (0)
    BAD_CASE("k > n", (pp.policy = TERSE_PARTIAL_QUORUM, pp.quorum = n + 1));
    BAD_CASE("k = 0", (pp.policy = TERSE_PARTIAL_QUORUM, pp.quorum = 0));
    BAD_CASE("deadline 0", (pp.policy = TERSE_PARTIAL_DEADLINE, pp.deadline_sec = 0));
    BAD_CASE("deadline NaN", (pp.policy = TERSE_PARTIAL_DEADLINE, pp.deadline_sec = NAN));
    BAD_CASE("deadline < 0", (pp.policy = TERSE_PARTIAL_DEADLINE, pp.deadline_sec = -1));
    BAD_CASE("min > n", (pp.policy = TERSE_PARTIAL_DEADLINE, pp.deadline_sec = 1, pp.min_contributors = n + 1));
    BAD_CASE("s >= n", (pp.gc = TERSE_GC_CYCLIC, pp.gc_s = n));
    BAD_CASE("(s+1) does not divide n", (pp.gc = TERSE_GC_FRACTIONAL, pp.gc_s = n - 2));
    BAD_CASE("gc with SOLO", (pp.gc = TERSE_GC_CYCLIC, pp.gc_s = 1, pp.policy = TERSE_PARTIAL_SOLO));
    BAD_CASE("gc quorum too small", (pp.gc = TERSE_GC_CYCLIC, pp.gc_s = 1, pp.policy = TERSE_PARTIAL_QUORUM,
                                     pp.quorum = n - 2));
    BAD_CASE("unknown codec", pp.codec = "nope");
    BAD_CASE("shared-seed codec", pp.codec = "randk");
    BAD_CASE("op", pp.op = TERSE_MAX);
    BAD_CASE("lookahead", pp.lookahead = 99);
    BAD_CASE("policy", pp.policy = (terse_partial_policy_t)42);
    RCHECK(ctx, terse_partial_create(NULL, 1, NULL, &p) == TERSE_ERR_INVALID_ARG, "NULL comm");
    RCHECK(ctx, terse_partial_create(c, 1, NULL, NULL) == TERSE_ERR_INVALID_ARG, "NULL out");
    /* the communicator is still good, and a good handle works */
    RCHECK(ctx, terse_partial_create(c, 100, NULL, &p) == TERSE_OK, "good create");
    float x[100] = {0}, y[100];
    x[5] = NAN;
    RCHECK(ctx, terse_partial_allreduce(p, x, y, NULL) == TERSE_ERR_INVALID_ARG, "NaN input");
    x[5] = 1;
    RCHECK(ctx, terse_partial_allreduce(p, x, y, NULL) == TERSE_OK, "step after the NaN");
    RCHECK(ctx, y[5] == (float)n, "y[5] = %g", y[5]);
    RCHECK(ctx, terse_partial_allreduce(p, x, NULL, NULL) == TERSE_ERR_INVALID_ARG, "NULL recvbuf");
    int d;
    RCHECK(ctx, terse_partial_wait_decision(p, -1, &d) == TERSE_ERR_INVALID_ARG, "negative timeout");
    terse_partial_destroy(p);
    /* mismatched counts: an error, not a hang */
    RCHECK(ctx, terse_partial_create(c, ctx->rank == 0 ? 100 : 101, NULL, &p) == TERSE_OK, "create");
    terse_status_t st = terse_partial_allreduce(p, x, y, NULL);
    RCHECK(ctx, st == TERSE_ERR_MISMATCH || (n == 1 && st == TERSE_OK), "mismatch: %s", terse_strerror(st));
    terse_partial_destroy(p);
    terse_comm_destroy(c);
    return 0;
}

static void t_invalid(void)
{
    run(1, 60, body_invalid, NULL, -1);
    run(4, 60, body_invalid, NULL, -1);
}

/* TERSE_TEST_FILTER=text runs the cases whose name contains it. */
static void add(CU_pSuite s, const char *name, CU_TestFunc fn)
{
    const char *f = getenv("TERSE_TEST_FILTER");
    if (!f || !*f || strstr(name, f))
        CU_add_test(s, name, fn);
}

int main(void)
{
    const char *list = getenv("TERSE_TEST_TRANSPORTS");
    g_quick = getenv("TERSE_TEST_QUICK") && atoi(getenv("TERSE_TEST_QUICK"));
    static char buf[128];
    snprintf(buf, sizeof(buf), "%s", list && *list ? list : "tcp");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_pSuite g = CU_add_suite("gradient coding", NULL, NULL);
    add(g, "every responder set decodes the sum (n 1-8, every s, both schemes)", t_gc_exact);
    add(g, "invalid n, s, scheme, rank, set", t_gc_invalid);
    CU_basic_run_suite(g);
    int failures = (int)CU_get_number_of_tests_failed();
    for (char *save, *tp = strtok_r(buf, ",", &save); tp; tp = strtok_r(NULL, ",", &save)) {
        g_transport = tp;
        char name[64];
        snprintf(name, sizeof(name), "partial allreduce over %s", tp);
        CU_pSuite s = CU_add_suite(name, NULL, NULL);
        add(s, "set, staleness, result identical; result = the set's sum of this step (5 policies, 1-8 ranks; quick: 1, 3, 4)",
                    t_agree);
        add(s, "staleness bound 2 with a rank always slow (3, 4 ranks)", t_stale);
        add(s, "fold-in: outputs + residuals = inputs (QUORUM 2, 4 ranks; SOLO 4)", t_fold);
        add(s, "gradient coding fp32: the full sum from any n - s (4 ranks s 1; 6 ranks s 2)", t_gc_step);
        add(s, "1-bit gradient coding is unbiased (sign1, 4 ranks, both schemes)", t_gc_unbiased);
        add(s, "a rank stuck 2 s: the others do 3 steps without it (3 ranks)", t_tolerant);
        add(s, "kill -9 of a member, of the coordinator: PEER_FAILED (3 ranks)", t_kill);
        add(s, "bad parameters, NaN, mismatched counts: clear errors (1, 4 ranks)", t_invalid);
        CU_basic_run_suite(s);
        failures += (int)CU_get_number_of_tests_failed();
    }
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
