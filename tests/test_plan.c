/*
 * test_plan.c - alltoall and alltoallv (sizes, dtypes, in place, gaps,
 * empty blocks, mismatched counts), reduce to a root, and persistent plans (every collective
 * with an _init, reused hundreds of times on changing contents, mixed with
 * plain calls; start twice, free while running, start of a non-plan).
 * Over each transport in TERSE_TEST_TRANSPORTS (default tcp), 1-8 ranks.
 */
#include "launcher.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

static const char *g_transport = "tcp";

static terse_status_t mk(const terse_launch_ctx_t *ctx, terse_comm_t **comm)
{
    return test_comm_over(ctx, g_transport, comm);
}

static double val(int from, int to, size_t i) { return (double)from * 1e6 + (double)to * 1e3 + (double)(i % 997); }

/* ---- alltoall ------------------------------------------------------------ */
static int body_alltoall(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size, me = ctx->rank;
    const size_t counts[] = {0, 1, 7, 1000, 70000};
    for (size_t ci = 0; ci < sizeof(counts) / sizeof(counts[0]); ci++) {
        size_t k = counts[ci];
        for (int inplace = 0; inplace < 2; inplace++) {
            double *s = malloc((k * (size_t)n + 1) * sizeof(double)), *r = malloc((k * (size_t)n + 1) * sizeof(double));
            RCHECK(ctx, s && r, "malloc");
            for (int d = 0; d < n; d++)
                for (size_t i = 0; i < k; i++)
                    s[(size_t)d * k + i] = val(me, d, i);
            double *out = inplace ? s : r;
            terse_status_t st = terse_alltoall(c, s, out, k, TERSE_FLOAT64);
            RCHECK(ctx, st == TERSE_OK, "alltoall %zu%s: %s", k, inplace ? " in place" : "", terse_strerror(st));
            for (int f = 0; f < n; f++)
                for (size_t i = 0; i < k; i++)
                    RCHECK(ctx, out[(size_t)f * k + i] == val(f, me, i), "count %zu%s: block %d elem %zu = %g", k,
                           inplace ? " in place" : "", f, i, out[(size_t)f * k + i]);
            free(s), free(r);
        }
    }
    /* int32 through the non-blocking form */
    int32_t *a = malloc(sizeof(int32_t) * 3 * (size_t)n), *b = malloc(sizeof(int32_t) * 3 * (size_t)n);
    RCHECK(ctx, a && b, "malloc");
    for (int d = 0; d < 3 * n; d++)
        a[d] = me * 100 + d / 3;
    terse_request_t *req;
    RCHECK(ctx, terse_alltoall_start(c, a, b, 3, TERSE_INT32, &req) == TERSE_OK && terse_request_wait(req) == TERSE_OK,
           "alltoall_start");
    for (int f = 0; f < n; f++)
        RCHECK(ctx, b[3 * f] == f * 100 + me && b[3 * f + 2] == f * 100 + me, "int32 block %d", f);
    free(a), free(b);
    terse_comm_destroy(c);
    return 0;
}

static size_t vcount(int from, int to) { return (size_t)(((from + 2 * to) % 5) * 37); }

static int body_alltoallv(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size, me = ctx->rank;
    size_t sc[8], sd[8], rc[8], rd[8], st_ = 0, rt = 0;
    for (int p = 0; p < n; p++) {
        sc[p] = vcount(me, p), rc[p] = vcount(p, me);
        sd[p] = st_ + 3 * (size_t)p; /* gaps between blocks */
        rd[p] = rt + 5 * (size_t)p;
        st_ += sc[p], rt += rc[p];
    }
    float *s = calloc(st_ + 3 * (size_t)n + 1, sizeof(float)), *r = calloc(rt + 5 * (size_t)n + 1, sizeof(float));
    RCHECK(ctx, s && r, "malloc");
    for (int p = 0; p < n; p++)
        for (size_t i = 0; i < sc[p]; i++)
            s[sd[p] + i] = (float)val(me, p, i);
    terse_status_t st = terse_alltoallv(c, s, sc, sd, r, rc, rd, TERSE_FLOAT32);
    RCHECK(ctx, st == TERSE_OK, "alltoallv: %s", terse_strerror(st));
    for (int f = 0; f < n; f++)
        for (size_t i = 0; i < rc[f]; i++)
            RCHECK(ctx, r[rd[f] + i] == (float)val(f, me, i), "from %d elem %zu", f, i);
    RCHECK(ctx, test_same_everywhere(c, &rt, 0), "sync");
    /* rank 0 expects one element more from rank 1 than rank 1 sends */
    if (n > 1) {
        if (me == 0)
            rc[1]++;
        st = terse_alltoallv(c, s, sc, NULL, r, rc, NULL, TERSE_FLOAT32);
        if (st == TERSE_OK)
            st = terse_barrier(c);
        RCHECK(ctx, st == TERSE_ERR_MISMATCH, "mismatched counts: %s", terse_strerror(st));
    }
    free(s), free(r);
    terse_comm_destroy(c);
    return 0;
}

/* ---- reduce to a root ---------------------------------------------------- */
static int body_reduce(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size, me = ctx->rank;
    const size_t counts[] = {0, 1, 1000, 300000};
    for (int root = 0; root < n; root++)
        for (size_t ci = 0; ci < sizeof(counts) / sizeof(counts[0]); ci++) {
            size_t k = counts[ci];
            int64_t *x = malloc((k + 1) * sizeof(int64_t)), *y = malloc((k + 1) * sizeof(int64_t));
            RCHECK(ctx, x && y, "malloc");
            const terse_op_t ops[] = {TERSE_SUM, TERSE_MAX, TERSE_AVG};
            for (int oi = 0; oi < 3; oi++) {
                for (size_t i = 0; i < k; i++)
                    x[i] = (int64_t)(me + 1) * (int64_t)(i % 13 + 1);
                int inplace = me == root && oi == 1;
                terse_status_t st = terse_reduce(c, x, inplace ? x : y, k, TERSE_INT64, ops[oi], root);
                RCHECK(ctx, st == TERSE_OK, "reduce root %d count %zu: %s", root, k, terse_strerror(st));
                if (me != root)
                    continue;
                const int64_t *res = inplace ? x : y;
                for (size_t i = 0; i < k; i++) {
                    int64_t base = (int64_t)(i % 13 + 1), sum = base * n * (n + 1) / 2;
                    int64_t want = oi == 0 ? sum : oi == 1 ? base * n : sum / n;
                    RCHECK(ctx, res[i] == want, "root %d op %d elem %zu = %lld want %lld", root, oi, i,
                           (long long)res[i], (long long)want);
                }
            }
            free(x), free(y);
        }
    /* float AVG, same bits from run to run: twice, compared at the root */
    size_t k = 70000;
    float *f = malloc(k * sizeof(float)), *g1 = malloc(k * sizeof(float)), *g2 = malloc(k * sizeof(float));
    RCHECK(ctx, f && g1 && g2, "malloc");
    for (size_t i = 0; i < k; i++)
        f[i] = (float)me * 0.1f + (float)i * 1e-3f;
    terse_request_t *plan;
    RCHECK(ctx, terse_reduce_init(c, f, g1, k, TERSE_FLOAT32, TERSE_AVG, 0, &plan) == TERSE_OK, "reduce_init");
    RCHECK(ctx, terse_start(plan) == TERSE_OK && terse_request_wait(plan) == TERSE_OK, "plan 1");
    RCHECK(ctx, terse_reduce(c, f, g2, k, TERSE_FLOAT32, TERSE_AVG, 0) == TERSE_OK, "plain");
    RCHECK(ctx, me != 0 || memcmp(g1, g2, k * sizeof(float)) == 0, "plan and plain call differ");
    RCHECK(ctx, terse_reduce(c, f, g2, k, TERSE_FLOAT32, TERSE_SUM, n) == TERSE_ERR_INVALID_ARG, "bad root");
    terse_request_free(plan);
    free(f), free(g1), free(g2);
    terse_comm_destroy(c);
    return 0;
}

/* ---- persistent plans ---------------------------------------------------- */
static int body_plans(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size, me = ctx->rank;
    /* an 8-byte allreduce, 1000 starts, new contents every time, plain calls between */
    int64_t small[1], sum;
    terse_request_t *ar;
    RCHECK(ctx, terse_allreduce_init(c, small, &sum, 1, TERSE_INT64, TERSE_SUM, &ar) == TERSE_OK, "allreduce_init");
    for (int it = 0; it < 1000; it++) {
        small[0] = it * 7 + me;
        RCHECK(ctx, terse_start(ar) == TERSE_OK && terse_request_wait(ar) == TERSE_OK, "start %d", it);
        RCHECK(ctx, sum == (int64_t)n * it * 7 + (int64_t)n * (n - 1) / 2, "start %d: %lld", it, (long long)sum);
        if (it % 100 == 0) {
            double x = me, y;
            RCHECK(ctx, terse_allreduce(c, &x, &y, 1, TERSE_FLOAT64, TERSE_MAX) == TERSE_OK && y == n - 1, "plain");
        }
    }
    /* a ring-sized allreduce in place, AVG */
    size_t big = 600000;
    float *v = malloc(big * sizeof(float));
    RCHECK(ctx, v != NULL, "malloc");
    terse_request_t *rr;
    RCHECK(ctx, terse_allreduce_init(c, v, v, big, TERSE_FLOAT32, TERSE_AVG, &rr) == TERSE_OK, "init big");
    for (int it = 0; it < 20; it++) {
        for (size_t i = 0; i < big; i++)
            v[i] = (float)(it + 2 * me);
        RCHECK(ctx, terse_start(rr) == TERSE_OK && terse_request_wait(rr) == TERSE_OK, "big %d", it);
        float want = (float)it + (float)(n - 1);
        RCHECK(ctx, v[0] == want && v[big - 1] == want, "big %d: %g want %g", it, v[0], want);
    }
    /* broadcast, allgather, reduce_scatter and alltoall plans, 100 starts each */
    int32_t bc[64], ag_in[2], *ag = malloc(sizeof(int32_t) * 2 * (size_t)n);
    int32_t *rs_in = malloc(sizeof(int32_t) * 4 * (size_t)n), rs_out[4];
    int32_t *aa = malloc(sizeof(int32_t) * 2 * (size_t)n);
    RCHECK(ctx, ag && rs_in && aa, "malloc");
    terse_request_t *pb, *pg, *ps, *pa;
    int root = n - 1;
    RCHECK(ctx, terse_broadcast_init(c, bc, bc, 64, TERSE_INT32, root, &pb) == TERSE_OK, "broadcast_init");
    RCHECK(ctx, terse_allgather_init(c, ag_in, ag, 2, TERSE_INT32, &pg) == TERSE_OK, "allgather_init");
    RCHECK(ctx, terse_reduce_scatter_init(c, rs_in, rs_out, 4, TERSE_INT32, TERSE_SUM, &ps) == TERSE_OK, "rs_init");
    RCHECK(ctx, terse_alltoall_init(c, aa, aa, 2, TERSE_INT32, &pa) == TERSE_OK, "alltoall_init");
    for (int it = 0; it < 100; it++) {
        for (int i = 0; i < 64; i++)
            bc[i] = me == root ? it * 1000 + i : -1;
        ag_in[0] = me * 10 + it, ag_in[1] = -it;
        for (int i = 0; i < 4 * n; i++)
            rs_in[i] = i + it;
        for (int d = 0; d < 2 * n; d++)
            aa[d] = me * 1000 + (d / 2) * 10 + it % 10;
        /* started together, waited in another order */
        RCHECK(ctx, terse_start(pb) == TERSE_OK && terse_start(pg) == TERSE_OK && terse_start(ps) == TERSE_OK &&
                        terse_start(pa) == TERSE_OK, "starts %d", it);
        RCHECK(ctx, terse_request_wait(pa) == TERSE_OK && terse_request_wait(ps) == TERSE_OK &&
                        terse_request_wait(pg) == TERSE_OK && terse_request_wait(pb) == TERSE_OK, "waits %d", it);
        RCHECK(ctx, bc[0] == it * 1000 && bc[63] == it * 1000 + 63, "broadcast %d: %d", it, bc[0]);
        for (int r = 0; r < n; r++)
            RCHECK(ctx, ag[2 * r] == r * 10 + it && ag[2 * r + 1] == -it, "allgather %d", it);
        for (int i = 0; i < 4; i++)
            RCHECK(ctx, rs_out[i] == n * (4 * me + i + it), "reduce_scatter %d", it);
        for (int f = 0; f < n; f++)
            RCHECK(ctx, aa[2 * f] == f * 1000 + me * 10 + it % 10, "alltoall %d from %d: %d", it, f, aa[2 * f]);
    }
    /* misuse */
    terse_request_t *plain;
    RCHECK(ctx, terse_allreduce_start(c, small, &sum, 1, TERSE_INT64, TERSE_SUM, &plain) == TERSE_OK, "plain start");
    RCHECK(ctx, terse_start(plain) == TERSE_ERR_INVALID_ARG, "start of a non-plan");
    RCHECK(ctx, terse_request_wait(plain) == TERSE_OK, "plain wait");
    RCHECK(ctx, terse_start(NULL) == TERSE_ERR_INVALID_ARG, "start NULL");
    RCHECK(ctx, terse_allreduce_init(c, small, &sum, 1, TERSE_INT64, TERSE_SUM, NULL) == TERSE_ERR_INVALID_ARG,
           "init without a handle");
    if (n > 1) {
        RCHECK(ctx, terse_start(rr) == TERSE_OK, "start");
        RCHECK(ctx, terse_start(rr) == TERSE_ERR_BUSY, "second start while running");
        RCHECK(ctx, terse_request_free(rr) == TERSE_ERR_BUSY, "free while running");
        RCHECK(ctx, terse_request_wait(rr) == TERSE_OK, "wait");
    }
    RCHECK(ctx, terse_request_free(rr) == TERSE_OK && terse_request_free(ar) == TERSE_OK, "free");
    RCHECK(ctx, test_same_everywhere(c, v, big * sizeof(float)), "replicas");
    /* pb, pg, ps, pa are released with the communicator */
    free(v), free(ag), free(rs_in), free(aa);
    terse_comm_destroy(c);
    return 0;
}

static const int counts[] = {1, 2, 3, 4, 5, 8};
static void run_all(const char *name, terse_rank_fn fn)
{
    CU_ASSERT_EQUAL(test_run_ranks(name, g_transport, fn, counts, 6, 180), 0);
}
static void t_alltoall(void) { run_all("alltoall", body_alltoall); }
static void t_alltoallv(void) { run_all("alltoallv", body_alltoallv); }
static void t_plans(void) { run_all("plans", body_plans); }
static void t_reduce(void) { run_all("reduce", body_reduce); }

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
        snprintf(name, sizeof(name), "alltoall, reduce and plans over %s", tp);
        CU_pSuite s = CU_add_suite(name, NULL, NULL);
        CU_add_test(s, "alltoall: 0-70000 per block, float64 and int32, in place (1-8 ranks)", t_alltoall);
        CU_add_test(s, "alltoallv: gaps, empty blocks, mismatched counts (1-8 ranks)", t_alltoallv);
        CU_add_test(s, "reduce: every root, sum/max/avg, in place, plan = plain call (1-8 ranks)", t_reduce);
        CU_add_test(s, "plans: 1000 starts, every collective, misuse (1-8 ranks)", t_plans);
        CU_basic_run_suite(s);
        failures += (int)CU_get_number_of_tests_failed();
    }
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
