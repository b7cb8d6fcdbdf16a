/*
 * fmnist_train - data-parallel training on Fashion-MNIST through terse.
 *
 *   fmnist_train [-n ranks] [-m softmax|mlp] [-M method] [-e epochs] [-b batch per rank]
 *                [-l lr (default 0.01 softmax, 0.05 mlp)] [-u momentum] [-H error-averaging period] [-k top-k ratio]
 *                [-d data dir] [-s seed] [-T transport]
 *
 * Methods (the update u = lr * local momentum is what each rank sends, so
 * the residual e is in parameter units and the step-ahead point is x - e):
 *   full        dense terse_allreduce (full precision)
 *   cnat        C_nat (cnat8), no feedback (unbiased)
 *   natdither   natural dithering (s = 4 levels, 2-norm, bucket 512), no feedback
 *   sign-ef     scaled sign + error feedback
 *   sign-sa     scaled sign + step-ahead + error averaging every H steps
 *   topk-ef     top-k (ratio -k, default 1%) + error feedback
 *   topk-sa     top-k + step-ahead + error averaging
 *   adacons     AdaCons (terse_adacons, rescaled by the mean gradient norm) of the
 *               gradients, then the same momentum and lr applied to the aggregate
 *   adacons-cnat  the same with C_nat on its second allreduce (unbiased)
 * Every rank holds the same model; it checks at the end that all replicas are
 * bit-identical. Rank 0 prints one RESULT line per epoch.
 */
#include "fmnist.h"
#include "launcher.h"
#include "terse.h"

#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *model, *method, *data, *transport;
    int epochs, batch, hidden, H, nranks;
    double lr, momentum, ratio;
    uint64_t seed;
} opts_t;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- one rank ------------------------------------------------------------ */

static int method_params(const opts_t *o, terse_compressed_params_t *p, int *step_ahead)
{
    terse_compressed_params_init(p);
    p->op = TERSE_AVG;
    *step_ahead = 0;
    if (!strcmp(o->method, "cnat")) {
        p->codec = "cnat8", p->error_feedback = 0;
    } else if (!strcmp(o->method, "natdither")) {
        p->codec = "natdither", p->error_feedback = 0, p->levels = 4, p->norm = 2, p->bucket = 512;
    } else if (!strcmp(o->method, "sign-ef") || !strcmp(o->method, "sign-sa")) {
        p->codec = "sign";
    } else if (!strcmp(o->method, "topk-ef") || !strcmp(o->method, "topk-sa")) {
        p->codec = "topk", p->ratio = o->ratio;
    } else {
        return -1;
    }
    if (strstr(o->method, "-sa")) {
        *step_ahead = 1;
        p->error_average_every = o->H;
    }
    return 0;
}

static int body(const terse_launch_ctx_t *ctx, void *arg)
{
    const opts_t *o = arg;
    terse_comm_t *comm;
    dataset_t train, test;
    if (fmnist_setup(ctx, o->transport, 120, o->data, &comm, &train, &test))
        return 1;
    int n = terse_comm_size(comm), me = terse_comm_rank(comm);
    terse_status_t st;
    model_t m = model_make(!strcmp(o->model, "mlp") ? o->hidden : 0);
    size_t P = m.nparams;
    float *x = malloc(P * 4), *y = malloc(P * 4), *g = malloc(P * 4), *mom = calloc(P, 4);
    float *u = malloc(P * 4), *delta = malloc(P * 4);
    int B = o->batch;
    float *scratch = malloc(model_scratch(&m, B > 256 ? B : 256) * sizeof(float)); /* batch or eval block */
    model_init(&m, x, o->seed);

    int full = !strcmp(o->method, "full"), step_ahead = 0;
    terse_compressed_t *cz = NULL;
    terse_adacons_t *ad = NULL;
    if (!strncmp(o->method, "adacons", 7)) {
        terse_adacons_params_t ap;
        terse_adacons_params_init(&ap);
        ap.rescale = 1, ap.seed = o->seed;
        if (!strcmp(o->method, "adacons-cnat"))
            ap.codec_combine = "cnat8", ap.error_feedback = -1;
        else if (strcmp(o->method, "adacons"))
            return fprintf(stderr, "fmnist_train: unknown method %s\n", o->method), 1;
        if ((st = terse_adacons_create(comm, P, &ap, &ad)) != TERSE_OK)
            return fprintf(stderr, "fmnist_train: adacons: %s\n", terse_strerror(st)), 1;
    } else if (!full) {
        terse_compressed_params_t zp;
        if (method_params(o, &zp, &step_ahead)) {
            fprintf(stderr, "fmnist_train: unknown method %s\n", o->method);
            return 1;
        }
        if ((st = terse_compressed_create(comm, P, &zp, &cz)) != TERSE_OK) {
            fprintf(stderr, "fmnist_train: compressed allreduce: %s\n", terse_strerror(st));
            return 1;
        }
    }
    /* this rank's shard: samples r, r + n, r + 2n, ... reshuffled every epoch */
    int shard = (train.n - me + n - 1) / n;
    int *order = malloc(sizeof(int) * (size_t)shard), *tidx = malloc(sizeof(int) * (size_t)test.n);
    for (int i = 0; i < shard; i++)
        order[i] = me + i * n;
    int steps = shard / B; /* equal on every rank: 60000 / n is whole for n | 60000 */
    int msteps;
    terse_allreduce(comm, &steps, &msteps, 1, TERSE_INT32, TERSE_MIN);
    steps = msteps;
    uint64_t shuffle = o->seed * 7919 + (uint64_t)me;
    terse_comm_stats_t s0;
    terse_comm_stats(comm, &s0);
    double train_time = 0;
    if (me == 0)
        printf("# fmnist_train: model %s (%zu parameters), method %s, %d ranks x batch %d, lr %g, "
               "momentum %g, %d steps per epoch\n", o->model, P, o->method, n, B, o->lr, o->momentum, steps);
    for (int epoch = 1; epoch <= o->epochs; epoch++) {
        for (int i = shard - 1; i > 0; i--) {
            int j = (int)(fmnist_rng(&shuffle) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j], order[j] = t;
        }
        double t0 = now(), loss = 0;
        int correct_train = 0;
        for (int s = 0; s < steps; s++) {
            /* gradient at x, or at the step-ahead point x - e */
            const float *at = x;
            if (step_ahead) {
                terse_compressed_step_ahead(cz, x, y);
                at = y;
            }
            loss += model_run(&m, at, g, &train, order + (size_t)s * B, B, scratch, &correct_train);
            if (ad) { /* aggregate the gradients; momentum on the aggregate (the same everywhere) */
                if ((st = terse_adacons_step(ad, g, u)) != TERSE_OK) {
                    fmnist_report(comm, "fmnist_train", s, st);
                    return 1;
                }
                for (size_t i = 0; i < P; i++) {
                    mom[i] = (float)o->momentum * mom[i] + u[i];
                    x[i] -= (float)o->lr * mom[i];
                }
                continue;
            }
            for (size_t i = 0; i < P; i++) {
                mom[i] = (float)o->momentum * mom[i] + g[i];
                u[i] = (float)o->lr * mom[i];
            }
            st = full ? terse_allreduce(comm, u, delta, P, TERSE_FLOAT32, TERSE_AVG)
                      : terse_compressed_allreduce(cz, u, delta);
            if (st != TERSE_OK) {
                fmnist_report(comm, "fmnist_train", s, st);
                return 1;
            }
            for (size_t i = 0; i < P; i++)
                x[i] -= delta[i];
        }
        train_time += now() - t0;
        /* test accuracy: each rank a slice, counts summed */
        int lo = test.n * me / n, hi = test.n * (me + 1) / n, correct = 0;
        for (int i = lo; i < hi; i++)
            tidx[i - lo] = i;
        double tloss = 0;
        for (int i = lo; i < hi; i += 256) {
            int cnt = hi - i < 256 ? hi - i : 256;
            tloss += model_run(&m, x, NULL, &test, tidx + (i - lo), cnt, scratch, &correct);
        }
        double v[3] = {(double)correct, tloss, loss}, tot[3];
        terse_allreduce(comm, v, tot, 3, TERSE_FLOAT64, TERSE_SUM);
        terse_comm_stats_t s1;
        terse_comm_stats(comm, &s1);
        uint64_t bytes = s1.bytes_sent - s0.bytes_sent, ball;
        terse_allreduce(comm, &bytes, &ball, 1, TERSE_INT64, TERSE_SUM);
        if (me == 0) {
            printf("RESULT model=%s method=%s epoch=%d test_acc=%.4f test_loss=%.4f train_loss=%.4f "
                   "bytes_per_rank=%llu train_time=%.1f\n", o->model, o->method, epoch, tot[0] / test.n,
                   tot[1] / test.n, tot[2] / ((double)steps * B * n), (unsigned long long)(ball / (uint64_t)n),
                   train_time);
            fflush(stdout);
        }
    }
    /* replicas must be bit-identical */
    int same = fmnist_replicas_identical(comm, x, P);
    if (me == 0)
        printf("# replicas %s\n", same ? "bit-identical on every rank" : "DIFFER");
    terse_compressed_destroy(cz);
    terse_adacons_destroy(ad);
    terse_comm_destroy(comm);
    free(x), free(y), free(g), free(mom), free(u), free(delta), free(scratch), free(order), free(tidx);
    fmnist_free(&train), fmnist_free(&test);
    return same ? 0 : 1;
}

int main(int argc, char **argv)
{
    opts_t o = {.model = "mlp", .method = "full", .data = FMNIST_DIR,
                .epochs = 5, .batch = 32, .hidden = 128, .H = 20, .nranks = 4, .lr = 0,
                .momentum = 0.9, .ratio = 0.01, .seed = 1};
    int c;
    while ((c = getopt(argc, argv, "n:m:M:e:b:l:u:H:k:d:s:T:h:")) != -1) {
        switch (c) {
        case 'n': o.nranks = atoi(optarg); break;
        case 'm': o.model = optarg; break;
        case 'M': o.method = optarg; break;
        case 'e': o.epochs = atoi(optarg); break;
        case 'b': o.batch = atoi(optarg); break;
        case 'l': o.lr = atof(optarg); break;
        case 'u': o.momentum = atof(optarg); break;
        case 'H': o.H = atoi(optarg); break;
        case 'k': o.ratio = atof(optarg); break;
        case 'd': o.data = optarg; break;
        case 's': o.seed = strtoull(optarg, NULL, 10); break;
        case 'T': o.transport = optarg; break;
        case 'h': o.hidden = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: fmnist_train [-n ranks] [-m softmax|mlp] [-M full|cnat|natdither|sign-ef|"
                            "sign-sa|topk-ef|topk-sa] [-e epochs] [-b batch] [-l lr] [-u momentum] [-H period] "
                            "[-k ratio] [-h hidden] [-d dir] [-s seed] [-T transport]\n");
            return 2;
        }
    }
    if (strcmp(o.model, "mlp") && strcmp(o.model, "softmax")) {
        fprintf(stderr, "fmnist_train: model must be softmax or mlp\n");
        return 2;
    }
    if (o.lr <= 0) /* defaults tuned on full precision: 0.01 for softmax, 0.05 for the MLP */
        o.lr = strcmp(o.model, "mlp") ? 0.01 : 0.05;
    int xr, xs;
    int n = terse_launch_external(&xr, &xs) ? xs : o.nranks;
    return terse_launch(n, 3600, body, &o, NULL) ? 1 : 0;
}
