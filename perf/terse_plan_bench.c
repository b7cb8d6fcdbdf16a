/*
 * terse_plan_bench.c - what a persistent plan saves per call: the same
 * allreduce (float32 sum) as a plain call and started from a plan built once,
 * repetitions interleaved (plain, plan, plain, ...), per-call time as the
 * median and range over the repetitions, measured on rank 0.
 *
 *   terse_plan_bench [-t tcp|verbs] [-r reps] nranks...
 */
#include "launcher.h"
#include "terse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *g_transport = "tcp";
static int g_reps = 7;
static const size_t sizes[] = {8, 64, 1024, 16384, 262144, 4194304};
#define NS (sizeof(sizes) / sizeof(sizes[0]))
#define MAXREPS 32


static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int body(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    terse_comm_params_t p;
    terse_comm_params_init(&p);
    p.rank = ctx->rank, p.size = ctx->size, p.root_addr = ctx->root, p.secret = ctx->secret;
    p.transport = g_transport, p.timeout_sec = 120;
    if (terse_comm_create(&p, &c) != TERSE_OK)
        return 1;
    float *x = calloc(sizes[NS - 1] / 4, sizeof(float));
    if (!x)
        return 1;
    for (size_t si = 0; si < NS; si++) {
        size_t count = sizes[si] / 4 ? sizes[si] / 4 : 1;
        int iters = sizes[si] <= 16384 ? 1000 : sizes[si] <= 262144 ? 100 : 10;
        terse_request_t *plan;
        if (terse_allreduce_init(c, x, x, count, TERSE_FLOAT32, TERSE_SUM, &plan) != TERSE_OK)
            return 1;
        double t_plain[MAXREPS], t_plan[MAXREPS];
        for (int w = 0; w < 20; w++) /* warm-up: connections, caches */
            if (terse_allreduce(c, x, x, count, TERSE_FLOAT32, TERSE_SUM) != TERSE_OK)
                return 1;
        for (int rep = 0; rep < g_reps; rep++) {
            terse_barrier(c);
            double t = terse_launch_now();
            for (int i = 0; i < iters; i++)
                if (terse_allreduce(c, x, x, count, TERSE_FLOAT32, TERSE_SUM) != TERSE_OK)
                    return 1;
            t_plain[rep] = (terse_launch_now() - t) / iters;
            terse_barrier(c);
            t = terse_launch_now();
            for (int i = 0; i < iters; i++)
                if (terse_start(plan) != TERSE_OK || terse_request_wait(plan) != TERSE_OK)
                    return 1;
            t_plan[rep] = (terse_launch_now() - t) / iters;
        }
        terse_request_free(plan);
        if (ctx->rank == 0) {
            qsort(t_plain, (size_t)g_reps, sizeof(double), cmp_d);
            qsort(t_plan, (size_t)g_reps, sizeof(double), cmp_d);
            double a = t_plain[g_reps / 2], b = t_plan[g_reps / 2];
            printf("%6d %10zu %10.2f %9.2f %9.2f %10.2f %9.2f %9.2f %7.3f\n", ctx->size, sizes[si], a * 1e6,
                   t_plain[0] * 1e6, t_plain[g_reps - 1] * 1e6, b * 1e6, t_plan[0] * 1e6, t_plan[g_reps - 1] * 1e6,
                   a / b);
            fflush(stdout);
        }
    }
    free(x);
    terse_comm_destroy(c);
    return 0;
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
        if (!strcmp(argv[i], "-t"))
            g_transport = argv[i + 1];
        else if (!strcmp(argv[i], "-r"))
            g_reps = atoi(argv[i + 1]) > 0 && atoi(argv[i + 1]) <= MAXREPS ? atoi(argv[i + 1]) : 7;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: %s [-t tcp|verbs] [-r reps] nranks...\n", argv[0]);
        return 2;
    }
    printf("# terse_plan_bench: allreduce float32 sum over %s, %d interleaved repetitions; us per call on rank 0\n",
           g_transport, g_reps);
    printf("# %4s %10s %10s %9s %9s %10s %9s %9s %7s\n", "ranks", "bytes", "plain_med", "plain_min", "plain_max",
           "plan_med", "plan_min", "plan_max", "ratio");
    int failed = 0;
    for (; i < argc; i++) {
        int n = atoi(argv[i]);
        int *codes = calloc((size_t)(n > 0 ? n : 1), sizeof(int));
        if (n < 1 || !codes || terse_launch(n, 900, body, NULL, codes) != 0) {
            fprintf(stderr, "terse_plan_bench: %d ranks failed\n", n);
            failed = 1;
        }
        free(codes);
    }
    return failed;
}
