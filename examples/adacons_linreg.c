/*
 * adacons_linreg - the AdaCons authors' sample (yoniLc/AdaCons, Main.py) on
 * terse: a linear model w of dimension d (default 1000) with target 0,
 * loss 0.5 mean (x.w)^2 over x ~ U[0,1]^d, each rank drawing its own data;
 * batch 2048 / n per rank, gradients accumulated over 2 iterations, then
 * aggregated - the mean (terse_allreduce AVG) or AdaCons (terse_adacons,
 * momentum 0.99) - and applied with the sample's step size
 * lr = <G, w> / ||G||^2. The initial w is U[-5, 5] (the same on every rank).
 *
 *   adacons_linreg [-n ranks] [-M mean|adacons] [-d dim] [-i iterations] [-B global batch]
 *                  [-b beta] [-s seed]
 *
 * Rank 0 prints "LOSS method iter loss" every 10 iterations (the current
 * batch's loss before the step, as the sample prints) and a RESULT line.
 */
#include "launcher.h"
#include "terse.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *method;
    int nranks, dim, iters, batch;
    double beta;
    uint64_t seed;
} opts_t;

static double unit(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
}

static int body(const terse_launch_ctx_t *ctx, void *arg)
{
    const opts_t *o = arg;
    terse_comm_params_t cp = {.rank = ctx->rank, .size = ctx->size, .root_addr = ctx->root, .secret = ctx->secret,
                              .timeout_sec = 300};
    terse_comm_t *comm;
    terse_status_t st = terse_comm_create(&cp, &comm);
    if (st != TERSE_OK) {
        fprintf(stderr, "adacons_linreg: communicator: %s\n", terse_strerror(st));
        return 1;
    }
    int n = terse_comm_size(comm), me = terse_comm_rank(comm), d = o->dim, bs = o->batch / n;
    if (bs < 1)
        bs = 1;
    int ada = !strcmp(o->method, "adacons");
    terse_adacons_t *ac = NULL;
    if (ada) {
        terse_adacons_params_t ap;
        terse_adacons_params_init(&ap);
        ap.beta = o->beta;
        if ((st = terse_adacons_create(comm, (size_t)d, &ap, &ac)) != TERSE_OK) {
            fprintf(stderr, "adacons_linreg: %s\n", terse_strerror(st));
            return 1;
        }
    } else if (strcmp(o->method, "mean")) {
        fprintf(stderr, "adacons_linreg: unknown method %s\n", o->method);
        return 1;
    }
    float *w = malloc(sizeof(float) * (size_t)d), *g = calloc((size_t)d, sizeof(float));
    float *G = malloc(sizeof(float) * (size_t)d), *xb = malloc(sizeof(float) * (size_t)d);
    uint64_t wseed = o->seed, dseed = o->seed * 1000003u + (uint64_t)me + 1;
    for (int k = 0; k < d; k++)
        w[k] = (float)(-5 + 10 * unit(&wseed));
    double loss = 0, t0 = terse_launch_now();
    for (int it = 1; it <= o->iters; it++) {
        loss = 0;
        for (int b = 0; b < bs; b++) {
            double pred = 0;
            for (int k = 0; k < d; k++) {
                xb[k] = (float)unit(&dseed);
                pred += (double)xb[k] * w[k];
            }
            loss += 0.5 * pred * pred / bs;
            for (int k = 0; k < d; k++) /* d/dw of 0.5 pred^2, mean over the batch */
                g[k] += (float)(pred * xb[k] / bs);
        }
        if (it % 2 == 0) { /* accumulation over 2 iterations, as the sample */
            st = ada ? terse_adacons_step(ac, g, G) : terse_allreduce(comm, g, G, (size_t)d, TERSE_FLOAT32, TERSE_AVG);
            if (st != TERSE_OK) {
                fprintf(stderr, "adacons_linreg: rank %d: %s\n", me, terse_strerror(st));
                return 1;
            }
            double gw = 0, gg = 0;
            for (int k = 0; k < d; k++)
                gw += (double)G[k] * w[k], gg += (double)G[k] * G[k];
            double lr = gg > 0 ? gw / gg : 0; /* the sample's step size */
            for (int k = 0; k < d; k++) {
                w[k] -= (float)(lr * G[k]);
                g[k] = 0;
            }
        }
        double all;
        if (it % 10 == 0) {
            terse_allreduce(comm, &loss, &all, 1, TERSE_FLOAT64, TERSE_AVG);
            if (me == 0)
                printf("LOSS method=%s n=%d iter=%d loss=%.6e\n", o->method, n, it, all);
        }
    }
    double took = terse_launch_now() - t0;
    terse_adacons_stats_t s = {0};
    if (ac)
        terse_adacons_stats(ac, &s);
    if (me == 0)
        printf("RESULT method=%s n=%d dim=%d iters=%d final_loss=%.6e fallbacks=%llu time=%.2f\n", o->method, n, d,
               o->iters, loss, (unsigned long long)s.fallbacks, took);
    terse_adacons_destroy(ac);
    terse_comm_destroy(comm);
    free(w), free(g), free(G), free(xb);
    return 0;
}

int main(int argc, char **argv)
{
    opts_t o = {.method = "adacons", .nranks = 32, .dim = 1000, .iters = 1000, .batch = 2048, .beta = 0.99, .seed = 42};
    int c;
    while ((c = getopt(argc, argv, "n:M:d:i:B:b:s:")) != -1) {
        switch (c) {
        case 'n': o.nranks = atoi(optarg); break;
        case 'M': o.method = optarg; break;
        case 'd': o.dim = atoi(optarg); break;
        case 'i': o.iters = atoi(optarg); break;
        case 'B': o.batch = atoi(optarg); break;
        case 'b': o.beta = atof(optarg); break;
        case 's': o.seed = strtoull(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: adacons_linreg [-n ranks] [-M mean|adacons] [-d dim] [-i iterations] "
                            "[-B global batch] [-b beta] [-s seed]\n");
            return 2;
        }
    }
    if (o.dim < 1 || o.iters < 1 || o.batch < 1) {
        fprintf(stderr, "adacons_linreg: -d, -i and -B must be positive\n");
        return 2;
    }
    int xr, xs;
    int n = terse_launch_external(&xr, &xs) ? xs : o.nranks;
    return terse_launch(n, 3600, body, &o, NULL) ? 1 : 0;
}
