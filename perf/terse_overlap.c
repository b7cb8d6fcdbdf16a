/*
 * terse_overlap.c - do compressed allreduces overlap the caller's compute?
 * K buckets of S bytes (float32) are started back to back while the caller
 * computes for as long as they take alone, then waited for. Per repetition,
 * interleaved: the communication alone (T_comm), then start + compute(T_comm)
 * + wait (T_total), with and without the progress thread. The bar:
 * T_total <= 1.15 max(T_comm, T_compute). Times are the slowest rank's;
 * rank 0 prints the median and range over the repetitions.
 *
 *   terse_overlap [-n ranks] [-s bytes] [-k buckets] [-z codec] [-r reps] [-c sleep|spin]
 *
 * Compute "sleep" stands for a GPU's backward pass (the CPU waits on the
 * device); "spin" keeps the core busy, so on a machine with fewer cores than
 * ranks the communication's own CPU work then competes with it.
 * Ranks come from -n (forked) or an external launcher (TERSE_RANK/TERSE_SIZE).
 */
#include "launcher.h"
#include "terse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXREPS 32
#define MAXK 16

static size_t g_bytes = 16u << 20;
static int g_k = 4, g_reps = 5, g_spin = 0;
static const char *g_codec = "cnat8";


static volatile double sink;
static void compute(double sec)
{
    if (!g_spin) {
        usleep((useconds_t)(sec * 1e6));
        return;
    }
    double t0 = terse_launch_now(), x = 1;
    while (terse_launch_now() - t0 < sec)
        for (int i = 0; i < 10000; i++)
            x = x * 1.0000001 + 1e-9;
    sink = x;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Start the K buckets, compute `busy` seconds, wait: the slowest rank's time. */
static terse_status_t round_trip(terse_comm_t *c, terse_compressed_t **h, float **in, float **out, double busy,
                                 double *slowest)
{
    terse_status_t st = terse_barrier(c);
    double t0 = terse_launch_now();
    terse_request_t *r[MAXK];
    int k = 0;
    for (; st == TERSE_OK && k < g_k; k++)
        st = terse_compressed_allreduce_start(h[k], in[k], out[k], &r[k]);
    if (busy > 0)
        compute(busy);
    for (int i = 0; i < k; i++) {
        terse_status_t w = terse_request_wait(r[i]);
        st = st == TERSE_OK ? w : st;
    }
    double el = terse_launch_now() - t0;
    if (st == TERSE_OK)
        st = terse_allreduce(c, &el, slowest, 1, TERSE_FLOAT64, TERSE_MAX);
    return st;
}

static int body(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *comm[2];
    size_t count = g_bytes / sizeof(float);
    terse_compressed_t *h[2][MAXK];
    float *in[MAXK], *out[MAXK];
    for (int t = 0; t < 2; t++) { /* t = 1: with the progress thread */
        terse_comm_params_t p = TERSE_COMM_PARAMS_INIT;
        p.rank = ctx->rank, p.size = ctx->size;
        p.root_addr = ctx->root[0] ? ctx->root : NULL, p.secret = ctx->secret[0] ? ctx->secret : NULL;
        p.progress_thread = t ? 1 : -1; /* the second world meets at the same root: the first one's is closed */
        terse_status_t st = terse_comm_create(&p, &comm[t]);
        if (st != TERSE_OK) {
            fprintf(stderr, "terse_overlap: rank %d: create: %s\n", ctx->rank, terse_strerror(st));
            return 1;
        }
        for (int k = 0; k < g_k; k++) {
            terse_compressed_params_t cp;
            terse_compressed_params_init(&cp);
            cp.codec = g_codec;
            if ((st = terse_compressed_create(comm[t], count, &cp, &h[t][k])) != TERSE_OK) {
                fprintf(stderr, "terse_overlap: rank %d: compressed_create: %s\n", ctx->rank, terse_strerror(st));
                return 1;
            }
        }
    }
    for (int k = 0; k < g_k; k++) {
        in[k] = malloc(g_bytes), out[k] = malloc(g_bytes);
        if (!in[k] || !out[k])
            return 1;
        for (size_t i = 0; i < count; i++)
            in[k][i] = (float)((i * 2654435761u + (size_t)ctx->rank * 97 + (size_t)k) % 2001) * 1e-3f - 1.0f;
    }
    double comm_t[2][MAXREPS], total[2][MAXREPS];
    for (int t = 0; t < 2; t++) /* warm-up */
        if (round_trip(comm[t], h[t], in, out, 0, &comm_t[t][0]) != TERSE_OK)
            return 1;
    for (int rep = 0; rep < g_reps; rep++)
        for (int t = 0; t < 2; t++) {
            if (round_trip(comm[t], h[t], in, out, 0, &comm_t[t][rep]) != TERSE_OK ||
                round_trip(comm[t], h[t], in, out, comm_t[t][rep], &total[t][rep]) != TERSE_OK) {
                const char *why = "";
                terse_comm_error(comm[t], &why);
                fprintf(stderr, "terse_overlap: rank %d: %s\n", ctx->rank, why);
                return 1;
            }
        }
    if (ctx->rank == 0) {
        for (int t = 0; t < 2; t++) {
            double ratio[MAXREPS], cm[MAXREPS];
            for (int rep = 0; rep < g_reps; rep++)
                ratio[rep] = total[t][rep] / comm_t[t][rep], cm[rep] = comm_t[t][rep];
            qsort(ratio, (size_t)g_reps, sizeof(double), cmp_d);
            qsort(cm, (size_t)g_reps, sizeof(double), cmp_d);
            qsort(total[t], (size_t)g_reps, sizeof(double), cmp_d);
            printf("%-9s %5d %10zu %3d %6s %-7s %9.1f %9.1f %9.1f %7.3f %7.3f %7.3f\n", g_codec, ctx->size, g_bytes,
                   g_k, g_spin ? "spin" : "sleep", t ? "thread" : "none", cm[g_reps / 2] * 1e3,
                   cm[g_reps / 2] * 1e3, total[t][g_reps / 2] * 1e3, ratio[g_reps / 2], ratio[0],
                   ratio[g_reps - 1]);
        }
        fflush(stdout);
    }
    for (int t = 0; t < 2; t++) {
        for (int k = 0; k < g_k; k++)
            terse_compressed_destroy(h[t][k]);
        terse_comm_destroy(comm[t]);
    }
    for (int k = 0; k < g_k; k++)
        free(in[k]), free(out[k]);
    return 0;
}

int main(int argc, char **argv)
{
    int n = 2, c;
    while ((c = getopt(argc, argv, "n:s:k:z:r:c:h")) != -1) {
        switch (c) {
        case 'n': n = atoi(optarg); break;
        case 's': g_bytes = strtoull(optarg, NULL, 10); break;
        case 'k': g_k = atoi(optarg); break;
        case 'z': g_codec = optarg; break;
        case 'r': g_reps = atoi(optarg); break;
        case 'c': g_spin = !strcmp(optarg, "spin"); break;
        default:
            fprintf(stderr, "usage: terse_overlap [-n ranks] [-s bytes] [-k buckets] [-z codec] [-r reps] "
                            "[-c sleep|spin]\n");
            return 2;
        }
    }
    if (g_k < 1 || g_k > MAXK || g_reps < 1 || g_reps > MAXREPS || g_bytes < 4) {
        fprintf(stderr, "terse_overlap: 1 <= k <= %d, 1 <= reps <= %d, bytes >= 4\n", MAXK, MAXREPS);
        return 2;
    }
    int rank, size, external = terse_launch_external(&rank, &size);
    if (external)
        n = size; /* the launcher's ranks, whatever -n says */
    if (!external || rank == 0) {
        printf("# terse_overlap: %d compressed allreduces of %zu bytes started back to back, then compute for as long as "
               "they take alone, then wait; slowest rank; median [min-max] of %d interleaved repetitions\n",
               g_k, g_bytes, g_reps);
        printf("# %-7s %5s %10s %3s %6s %-7s %9s %9s %9s %7s %7s %7s\n", "codec", "ranks", "bytes", "k", "compute",
               "progress", "comm_ms", "comp_ms", "total_ms", "ratio", "min", "max");
    }
    return terse_launch(n, 900, body, NULL, NULL) != 0;
}
