/*
 * sasg_train - SASG's experiment on Fashion-MNIST: plain SGD on a 784-512-10
 * MLP, every rank sends lr x its gradient and the model moves by the SUM of
 * what arrives (as in the SASG paper), compared four ways:
 *   dense    dense terse_allreduce every step (every worker uploads)
 *   topk-em  top-k (ratio -k) with error memory, every worker every step
 *   lag      the skip rule with dense uploads (SASG with k = n)
 *   sasg     the skip rule with top-k uploads and error memory
 * Top-k is taken per tensor (W1, b1, W2, b2), as in the paper's code.
 * The skip rule needs ||grad(theta) - grad(theta_hat)||^2 on the same
 * minibatch; this program evaluates the stale gradient at
 * terse_sasg_stale_point() only when terse_sasg_need_change() says so.
 *
 *   sasg_train [-n ranks] [-M method] [-e epochs] [-b batch per rank] [-l lr]
 *              [-k ratio] [-D window] [-c threshold constant] [-t target accuracy] [-E eval period (steps)]
 *              [-L evaluations in the last epoch] [-h hidden] [-s seed] [-d data dir] [-T transport]
 *
 * Rank 0 prints EVAL lines (step, uploads so far over all ranks, test
 * accuracy) and a RESULT line: final accuracy and the mean over the last
 * epoch's evaluations, uploads in all and until the
 * target accuracy was first reached, skipped worker-steps in the last epoch,
 * bytes per rank and training time.
 */
#include "fmnist.h"
#include "launcher.h"
#include "terse.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *method, *data, *transport;
    int nranks, epochs, batch, D, hidden, eval_every, last_evals;
    double lr, ratio, target, c;
    uint64_t seed;
} opts_t;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}


static int body(const terse_launch_ctx_t *ctx, void *arg)
{
    const opts_t *o = arg;
    terse_comm_t *comm;
    dataset_t train, test;
    if (fmnist_setup(ctx, o->transport, 300, o->data, &comm, &train, &test))
        return 1;
    int n = terse_comm_size(comm), me = terse_comm_rank(comm);
    terse_status_t st;
    model_t m = model_make(o->hidden);
    size_t P = m.nparams;
    int B = o->batch;
    float *x = malloc(P * 4), *g = malloc(P * 4), *gs = malloc(P * 4), *u = malloc(P * 4), *upd = malloc(P * 4);
    float *scratch = malloc(model_scratch(&m, B > 256 ? B : 256) * sizeof(float));
    model_init(&m, x, o->seed);

    int dense = !strcmp(o->method, "dense");
    terse_sasg_t *sg = NULL;
    if (!dense) {
        terse_sasg_params_t sp;
        terse_sasg_params_init(&sp);
        sp.D = o->D;
        sp.lr = o->lr;
        sp.c = o->c;
        /* top-k per tensor (W1, b1, W2, b2), as the paper and its code do */
        size_t offs[5] = {m.w1, m.b1, m.w2, m.b2, m.nparams};
        sp.ntensors = 4;
        sp.offsets = offs;
        sp.ratio = !strcmp(o->method, "lag") ? 1.0 : o->ratio;
        if (strcmp(o->method, "topk-em") && strcmp(o->method, "lag") && strcmp(o->method, "sasg")) {
            fprintf(stderr, "sasg_train: unknown method %s\n", o->method);
            return 1;
        }
        if ((st = terse_sasg_create(comm, P, &sp, &sg)) != TERSE_OK) {
            fprintf(stderr, "sasg_train: sasg: %s\n", terse_strerror(st));
            return 1;
        }
    }
    int always = !strcmp(o->method, "topk-em"); /* never skips: top-k + error memory alone */
    int shard = (train.n - me + n - 1) / n, steps;
    int *order = malloc(sizeof(int) * (size_t)shard);
    for (int i = 0; i < shard; i++)
        order[i] = me + i * n;
    int local = shard / B;
    terse_allreduce(comm, &local, &steps, 1, TERSE_INT32, TERSE_MIN);
    uint64_t shuffle = o->seed * 7919 + (uint64_t)me;
    uint64_t uploads = 0, uploads_at_target = 0, last_epoch_skips = 0, total_steps = 0;
    int reached = 0;
    double t_train = 0, acc = 0, last_sum = 0;
    int last_n = 0;
    /* test accuracy of plain SGD at a constant step swings by +-0.5 points between
     * evaluations: the last epoch is also evaluated at last_evals evenly spaced
     * points and their mean reported next to the final value */
    int last_every = steps / o->last_evals > 0 ? steps / o->last_evals : 1;
    terse_comm_stats_t c0;
    terse_comm_stats(comm, &c0);
    if (me == 0)
        printf("# sasg_train: method %s, %d ranks x batch %d, MLP 784-%d-10 (%zu parameters), lr %g "
               "(update = sum over ranks), top-k %g, D %d, %d steps per epoch\n", o->method, n, B,
               o->hidden, P, o->lr, o->ratio, o->D, steps);
    for (int epoch = 1; epoch <= o->epochs; epoch++) {
        for (int i = shard - 1; i > 0; i--) {
            int j = (int)(fmnist_rng(&shuffle) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j], order[j] = t;
        }
        uint64_t epoch_skips = 0;
        for (int s = 0; s < steps; s++) {
            double t0 = now();
            const int *batch = order + (size_t)s * B;
            int dummy = 0;
            model_run(&m, x, g, &train, batch, B, scratch, &dummy);
            int up = 1;
            if (dense) {
                for (size_t i = 0; i < P; i++)
                    u[i] = (float)o->lr * g[i];
                st = terse_allreduce(comm, u, upd, P, TERSE_FLOAT32, TERSE_SUM);
            } else {
                if (always) { /* top-k + error memory: never skips */
                    st = terse_sasg_step(sg, x, g, INFINITY, upd, &up);
                } else {
                    int need = terse_sasg_need_change(sg);
                    if (need) /* the gradient at the last-upload model, same minibatch */
                        model_run(&m, terse_sasg_stale_point(sg), gs, &train, batch, B, scratch, &dummy);
                    st = terse_sasg_step_grads(sg, x, g, need ? gs : NULL, upd, &up);
                }
            }
            if (st != TERSE_OK) {
                const char *d;
                terse_comm_error(comm, &d);
                fprintf(stderr, "sasg_train: rank %d: %s (%s)\n", me, terse_strerror(st), d ? d : "");
                return 1;
            }
            for (size_t i = 0; i < P; i++)
                x[i] -= upd[i];
            t_train += now() - t0;
            total_steps++;
            uint64_t mine = (uint64_t)up, all;
            terse_allreduce(comm, &mine, &all, 1, TERSE_INT64, TERSE_SUM);
            uploads += all;
            epoch_skips += (uint64_t)n - all;
            int in_last = epoch == o->epochs && (steps - 1 - s) % last_every == 0 &&
                          (steps - 1 - s) / last_every < o->last_evals;
            if (total_steps % (uint64_t)o->eval_every == 0 || in_last) {
                acc = fmnist_accuracy(comm, &m, x, &test, scratch);
                if (in_last)
                    last_sum += acc, last_n++;
                if (!reached && acc >= o->target)
                    reached = 1, uploads_at_target = uploads;
                if (me == 0)
                    printf("EVAL method=%s step=%llu epoch=%d uploads=%llu test_acc=%.4f\n", o->method,
                           (unsigned long long)total_steps, epoch, (unsigned long long)uploads, acc);
            }
        }
        last_epoch_skips = epoch_skips;
        if (me == 0)
            fflush(stdout);
    }
    terse_comm_stats_t c1;
    terse_comm_stats(comm, &c1);
    uint64_t bytes = c1.bytes_sent - c0.bytes_sent, ball;
    terse_allreduce(comm, &bytes, &ball, 1, TERSE_INT64, TERSE_SUM);
    int same = fmnist_replicas_identical(comm, x, P);
    if (me == 0) {
        printf("RESULT method=%s c=%g seed=%llu final_acc=%.4f last_epoch_acc=%.4f uploads=%llu uploads_to_target=%lld target=%.3f "
               "skipped_last_epoch=%.3f bytes_per_rank=%llu train_time=%.1f replicas=%s\n", o->method, o->c,
               (unsigned long long)o->seed, acc, last_n ? last_sum / last_n : acc,
               (unsigned long long)uploads, reached ? (long long)uploads_at_target : -1LL, o->target,
               (double)last_epoch_skips / ((double)steps * n), (unsigned long long)(ball / (uint64_t)n), t_train,
               same ? "identical" : "DIFFER");
        fflush(stdout);
    }
    terse_sasg_destroy(sg);
    terse_comm_destroy(comm);
    free(x), free(g), free(gs), free(u), free(upd), free(scratch), free(order);
    fmnist_free(&train), fmnist_free(&test);
    return same ? 0 : 1;
}

int main(int argc, char **argv)
{
    opts_t o = {.method = "sasg", .data = FMNIST_DIR, .nranks = 10, .epochs = 5, .batch = 10, .D = 10,
                .hidden = 512, .eval_every = 300, .last_evals = 6, .lr = 0.005, .ratio = 0.01, .target = 0.85, .c = 1, .seed = 1};
    int c;
    while ((c = getopt(argc, argv, "n:M:e:b:l:k:D:t:E:L:h:s:d:T:c:")) != -1) {
        switch (c) {
        case 'n': o.nranks = atoi(optarg); break;
        case 'M': o.method = optarg; break;
        case 'e': o.epochs = atoi(optarg); break;
        case 'b': o.batch = atoi(optarg); break;
        case 'l': o.lr = atof(optarg); break;
        case 'k': o.ratio = atof(optarg); break;
        case 'D': o.D = atoi(optarg); break;
        case 't': o.target = atof(optarg); break;
        case 'E': o.eval_every = atoi(optarg); break;
        case 'L': o.last_evals = atoi(optarg); break;
        case 'h': o.hidden = atoi(optarg); break;
        case 's': o.seed = strtoull(optarg, NULL, 10); break;
        case 'd': o.data = optarg; break;
        case 'T': o.transport = optarg; break;
        case 'c': o.c = atof(optarg); break;
        default:
            fprintf(stderr, "usage: sasg_train [-n ranks] [-M dense|topk-em|lag|sasg] [-e epochs] [-b batch] "
                            "[-l lr] [-k ratio] [-D window] [-c threshold constant] [-t target] [-E eval steps] "
                            "[-L evals in the last epoch] [-h hidden] [-s seed] [-d dir] [-T transport]\n");
            return 2;
        }
    }
    if (o.eval_every < 1 || o.batch < 1 || o.epochs < 1 || o.last_evals < 1) {
        fprintf(stderr, "sasg_train: -E, -L, -b and -e must be positive\n");
        return 2;
    }
    int xr, xs;
    int n = terse_launch_external(&xr, &xs) ? xs : o.nranks;
    return terse_launch(n, 4 * 3600, body, &o, NULL) ? 1 : 0;
}
