/*
 * terse_scale.c - what a communicator costs as the job grows: for each rank
 * count, the time to create the world communicator, the connections, pinned
 * memory and resident memory per rank, and the time of the first and of
 * later allreduces (8 bytes and 1 MiB), the first paying for the
 * connections it opens. One line per rank count, the worst rank's figure
 * (medians of the later calls).
 *
 *   terse_scale [-t tcp|verbs] [-r reps] n1 n2 ...
 */
#include "launcher.h"
#include "terse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *g_transport = "tcp";
static int g_reps = 10;

enum { F_CREATE, F_CONN, F_PINNED, F_RSS, F_FIRST8, F_LATER8, F_FIRST1M, F_LATER1M, F_CONN_AFTER, NF };


static double rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = 0;
    while (f && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atof(line + 6);
    if (f)
        fclose(f);
    return kb / 1024;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double timed(terse_comm_t *c, void *buf, size_t count)
{
    double t = terse_launch_now();
    if (terse_allreduce(c, buf, buf, count, TERSE_FLOAT32, TERSE_SUM) != TERSE_OK)
        return -1;
    return terse_launch_now() - t;
}

static double median_of(terse_comm_t *c, void *buf, size_t count, int reps)
{
    double *t = malloc(sizeof(double) * (size_t)reps), m;
    for (int i = 0; i < reps; i++)
        t[i] = timed(c, buf, count);
    qsort(t, (size_t)reps, sizeof(double), cmp_d);
    m = t[reps / 2];
    free(t);
    return m;
}

static int body(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_params_t p;
    terse_comm_params_init(&p);
    p.rank = ctx->rank, p.size = ctx->size, p.root_addr = ctx->root, p.secret = ctx->secret;
    p.transport = g_transport, p.timeout_sec = 120;
    double f[NF] = {0}, t = terse_launch_now();
    terse_comm_t *c;
    if (terse_comm_create(&p, &c) != TERSE_OK)
        return 1;
    f[F_CREATE] = terse_launch_now() - t;
    terse_comm_stats_t s;
    terse_comm_stats(c, &s);
    f[F_CONN] = (double)s.connections;
    size_t big = (1 << 20) / sizeof(float);
    float *x = calloc(big, sizeof(float));
    f[F_FIRST8] = timed(c, x, 2);
    f[F_LATER8] = median_of(c, x, 2, g_reps);
    f[F_FIRST1M] = timed(c, x, big);
    f[F_LATER1M] = median_of(c, x, big, g_reps / 2 > 1 ? g_reps / 2 : 1);
    terse_comm_stats(c, &s);
    f[F_CONN_AFTER] = (double)s.connections;
    f[F_PINNED] = (double)s.pinned_bytes / (1 << 20);
    f[F_RSS] = rss_mib();
    double *all = ctx->rank == 0 ? malloc(sizeof(f) * (size_t)ctx->size) : malloc(sizeof(f) * (size_t)ctx->size);
    int ok = all && terse_allgather(c, f, all, NF, TERSE_FLOAT64) == TERSE_OK;
    if (ok && ctx->rank == 0) {
        double worst[NF] = {0}, mean_conn = 0;
        for (int r = 0; r < ctx->size; r++) {
            for (int k = 0; k < NF; k++)
                if (all[r * NF + k] > worst[k] || all[r * NF + k] < 0)
                    worst[k] = all[r * NF + k] < 0 ? -1e9 : all[r * NF + k];
            mean_conn += all[r * NF + F_CONN_AFTER] / ctx->size;
        }
        printf("%6d %10.3f %6.0f %8.1f %10.1f %9.1f %10.1f %10.1f %11.1f %11.1f\n", ctx->size, worst[F_CREATE],
               worst[F_CONN_AFTER], mean_conn, worst[F_PINNED], worst[F_RSS], worst[F_FIRST8] * 1e6,
               worst[F_LATER8] * 1e6, worst[F_FIRST1M] * 1e6, worst[F_LATER1M] * 1e6);
        fflush(stdout);
    }
    free(all);
    free(x);
    terse_comm_destroy(c);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i += 2) {
        if (i + 1 >= argc)
            break;
        if (!strcmp(argv[i], "-t"))
            g_transport = argv[i + 1];
        else if (!strcmp(argv[i], "-r"))
            g_reps = atoi(argv[i + 1]) > 0 ? atoi(argv[i + 1]) : 10;
    }
    if (i >= argc) {
        fprintf(stderr, "usage: %s [-t tcp|verbs] [-r reps] nranks...\n", argv[0]);
        return 2;
    }
    printf("# terse_scale: transport %s, %d repetitions; worst rank of each figure (medians for 'later')\n",
           g_transport, g_reps);
    printf("# %4s %10s %6s %8s %10s %9s %10s %10s %11s %11s\n", "ranks", "create_s", "conns", "conns_avg",
           "pinned_MiB", "rss_MiB", "first8_us", "later8_us", "first1M_us", "later1M_us");
    fflush(stdout);
    int failed = 0;
    for (; i < argc; i++) {
        int n = atoi(argv[i]);
        int *codes = calloc((size_t)n, sizeof(int));
        if (n < 1 || !codes || terse_launch(n, 600, body, NULL, codes) != 0) {
            fprintf(stderr, "terse_scale: %d ranks failed\n", n);
            failed = 1;
        }
        free(codes);
    }
    return failed;
}
