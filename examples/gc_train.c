/*
 * gc_train - 1-bit gradient coding with stragglers on Fashion-MNIST (Li and
 * Skoglund's setting, on terse_partial_allreduce). The training set is split
 * into n partitions; each step every partition contributes a minibatch
 * gradient g_j, and the model moves by lr x the mean of what is decoded:
 *   full         fp32, every rank sends its own g_r, waits for all (plain SGD)
 *   onebit       sign1 (unbiased 1-bit, scale per bucket), waits for all
 *   onebit-drop  sign1, the first n - s ranks (the stragglers' partitions are lost)
 *   gc           fp32 cyclic gradient coding: rank i computes s + 1 partitions,
 *                sends c_i = sum_j B_ij g_j, the first n - s decode the full sum
 *   gc-1bit      the same with c_i sent as sign1
 *   majority     fp32, eager-SGD's majority partial allreduce
 * Stragglers (straggler.h) take -F times their compute plus -W ms; compute is the real
 * gradient plus an emulated -C ms per partition gradient (these models take
 * microseconds, a real network's backward pass does not).
 *
 *   gc_train [-n ranks] [-M method] [-s stragglers tolerated] [-S none|fixed:K|random:K]
 *            [-F factor] [-W extra ms] [-C ms] [-m softmax|mlp] [-T steps] [-B batch per partition]
 *            [-l lr] [-E eval period] [-k bucket] [-x cyclic|fractional (default: fractional if s+1 | n)]
 *            [-r seed] [-d dir]
 *
 * Rank 0 prints EVAL lines (step, training seconds, test accuracy) and one
 * RESULT line (median step time, final accuracy, bytes per step per rank,
 * the code's size, partial steps, whether the replicas are identical).
 */
#include "fmnist.h"
#include "launcher.h"
#include "straggler.h"
#include "terse.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const char *method, *data, *model, *spec, *scheme;
    int nranks, s, steps, batch, eval_every;
    double factor, delay_ms, compute_ms, lr;
    size_t bucket;
    uint64_t seed;
} opts_t;

static void sleep_until(double t)
{
    double left = t - terse_launch_now();
    if (left <= 0)
        return;
    struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
    nanosleep(&ts, NULL);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    int gc, onebit, policy, own; /* own: each rank sends its own partition's gradient */
} method_t;

static int method_of(const char *name, method_t *m)
{
    static const struct {
        const char *name;
        method_t m;
    } table[] = {
        {"full", {0, 0, TERSE_PARTIAL_ALL, 1}},       {"onebit", {0, 1, TERSE_PARTIAL_ALL, 1}},
        {"onebit-drop", {0, 1, TERSE_PARTIAL_QUORUM, 1}}, {"gc", {1, 0, TERSE_PARTIAL_QUORUM, 0}},
        {"gc-1bit", {1, 1, TERSE_PARTIAL_QUORUM, 0}}, {"majority", {0, 0, TERSE_PARTIAL_MAJORITY, 1}},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (!strcmp(table[i].name, name)) {
            *m = table[i].m;
            return 0;
        }
    return -1;
}

static int body(const terse_launch_ctx_t *ctx, void *arg)
{
    const opts_t *o = arg;
    method_t mt;
    straggler_t sl;
    if (method_of(o->method, &mt) || straggler_parse(o->spec, o->factor, o->delay_ms * 1e-3, o->seed, &sl)) {
        fprintf(stderr, "gc_train: unknown method %s or bad straggler spec %s\n", o->method, o->spec);
        return 1;
    }
    terse_comm_t *comm;
    dataset_t train, test;
    if (fmnist_setup(ctx, NULL, 300, o->data, &comm, &train, &test))
        return 1;
    int n = terse_comm_size(comm), me = terse_comm_rank(comm), s = o->s;
    model_t m = model_make(strcmp(o->model, "mlp") ? 0 : 64);
    size_t P = m.nparams;
    int B = o->batch;
    /* default: fractional repetition when s + 1 divides n - its decoding
     * averages a group's 1-bit codes, the cyclic one amplifies their noise */
    const char *sname = o->scheme ? o->scheme : n % (s + 1) == 0 ? "fractional" : "cyclic";
    terse_gc_scheme_t scheme = strcmp(sname, "fractional") ? TERSE_GC_CYCLIC : TERSE_GC_FRACTIONAL;

    terse_partial_params_t pp;
    terse_partial_params_init(&pp);
    pp.policy = (terse_partial_policy_t)mt.policy;
    pp.quorum = mt.policy == TERSE_PARTIAL_QUORUM ? n - s : 0;
    pp.codec = mt.onebit ? "sign1" : "fp32";
    pp.bucket = o->bucket;
    pp.op = TERSE_AVG;
    pp.seed = o->seed;
    if (mt.gc)
        pp.gc = scheme, pp.gc_s = s;
    terse_partial_t *p;
    terse_status_t st = terse_partial_create(comm, P, &pp, &p);
    if (st != TERSE_OK) {
        fprintf(stderr, "gc_train: partial_create: %s\n", terse_strerror(st));
        return 1;
    }
    /* the partitions this rank computes, and their coefficients */
    int parts[64] = {me};
    double coef[64] = {1};
    int nparts = 1;
    terse_gc_t *gc = NULL;
    if (mt.gc) {
        if (s + 1 > 64 || terse_gc_create(n, s, scheme, o->seed, &gc) != TERSE_OK ||
            terse_gc_assignment(gc, me, parts, coef) != TERSE_OK)
            return 1;
        nparts = s + 1;
    }
    float *x = malloc(P * 4), *g = malloc(P * 4), *c = malloc(P * 4), *out = malloc(P * 4);
    float *scratch = malloc(model_scratch(&m, B > 256 ? B : 256) * sizeof(float));
    model_init(&m, x, o->seed);
    /* partition j: samples j, j + n, j + 2n, ... in one fixed shuffled order per partition */
    int plen = train.n / n;
    int *idx = malloc(sizeof(int) * (size_t)B);
    double *step_time = malloc(sizeof(double) * (size_t)o->steps), t_train = 0, acc = 0;
    uint64_t bytes = 0, partial_steps = 0, included = 0;
    if (me == 0)
        printf("# gc_train: method %s, %d ranks, s %d, stragglers %s x%g, model %s (%zu parameters), "
               "batch %d per partition, lr %g, %.1f ms per partition gradient, %s\n",
               o->method, n, s, o->spec, o->factor, o->model, P, B, o->lr, o->compute_ms,
               mt.gc ? sname : "no coding");
    terse_barrier(comm);
    for (int t = 0; t < o->steps; t++) {
        double t0 = terse_launch_now();
        memset(c, 0, P * 4);
        for (int k = 0; k < nparts; k++) {
            int j = parts[k], dummy;
            uint64_t z = straggler_mix(o->seed * 1000003u + (uint64_t)t * 131u + (uint64_t)j);
            for (int b = 0; b < B; b++) {
                z = straggler_mix(z);
                idx[b] = j + n * (int)(z % (uint64_t)plen);
            }
            model_run(&m, x, g, &train, idx, B, scratch, &dummy);
            for (size_t i = 0; i < P; i++)
                c[i] += (float)coef[k] * g[i];
        }
        sleep_until(t0 + 1e-3 * o->compute_ms * nparts); /* the emulated backward pass */
        double compute = terse_launch_now() - t0;
        if (straggler_is_slow(&sl, me, n, (uint64_t)t)) {
            int decided; /* slow: (factor - 1) x longer, unless the step is decided without us */
            terse_partial_wait_decision(p, straggler_extra(&sl, compute), &decided);
        }
        terse_partial_info_t info;
        st = terse_partial_allreduce(p, c, out, &info);
        if (st != TERSE_OK) {
            fmnist_report(comm, "gc_train", t, st);
            return 1;
        }
        for (size_t i = 0; i < P; i++)
            x[i] -= (float)o->lr * out[i];
        step_time[t] = terse_launch_now() - t0;
        t_train += step_time[t];
        bytes += info.bytes_sent;
        partial_steps += info.contributors < n;
        included += info.included;
        if ((t + 1) % o->eval_every == 0 || t + 1 == o->steps) {
            acc = fmnist_accuracy(comm, &m, x, &test, scratch);
            if (me == 0)
                printf("EVAL method=%s s=%d stragglers=%s step=%d time=%.3f test_acc=%.4f\n", o->method, s, o->spec,
                       t + 1, t_train, acc);
        }
    }
    /* bytes per step per rank over all ranks; the replicas must be equal */
    uint64_t ball;
    terse_allreduce(comm, &bytes, &ball, 1, TERSE_INT64, TERSE_SUM);
    int same = fmnist_replicas_identical(comm, x, P);
    qsort(step_time, (size_t)o->steps, sizeof(double), cmp_double);
    double med = step_time[o->steps / 2];
    double med_max;
    terse_allreduce(comm, &med, &med_max, 1, TERSE_FLOAT64, TERSE_MAX);
    size_t bucket = o->bucket ? o->bucket : 512;
    size_t code = mt.onebit ? 12 + 4 * ((P + bucket - 1) / bucket) + (P + 7) / 8 : 12 + 4 * P;
    if (me == 0) {
        printf("RESULT method=%s model=%s n=%d s=%d stragglers=%s factor=%g median_step_ms=%.2f final_acc=%.4f "
               "bytes_per_step=%.0f code_bytes=%zu dense_bytes=%zu partial_steps=%.3f train_time=%.2f replicas=%s\n",
               o->method, o->model, n, s, o->spec, o->factor, 1e3 * med_max, acc,
               (double)ball / n / o->steps, code, 4 * P, (double)partial_steps / o->steps, t_train,
               same ? "identical" : "DIFFER");
        fflush(stdout);
    }
    (void)included;
    terse_partial_destroy(p);
    terse_gc_destroy(gc);
    terse_comm_destroy(comm);
    free(x), free(g), free(c), free(out), free(scratch), free(idx), free(step_time);
    fmnist_free(&train), fmnist_free(&test);
    return same ? 0 : 1;
}

int main(int argc, char **argv)
{
    opts_t o = {.method = "gc-1bit", .data = FMNIST_DIR, .model = "softmax", .spec = "fixed:1", .scheme = NULL,
                .nranks = 6, .s = 1, .steps = 600, .batch = 16, .eval_every = 50, .factor = 3, .compute_ms = 4,
                .lr = 0.05, .bucket = 512, .seed = 1};
    int ch;
    while ((ch = getopt(argc, argv, "n:M:s:S:F:W:C:m:T:B:l:E:k:x:r:d:")) != -1) {
        switch (ch) {
        case 'n': o.nranks = atoi(optarg); break;
        case 'M': o.method = optarg; break;
        case 's': o.s = atoi(optarg); break;
        case 'S': o.spec = optarg; break;
        case 'F': o.factor = atof(optarg); break;
        case 'W': o.delay_ms = atof(optarg); break;
        case 'C': o.compute_ms = atof(optarg); break;
        case 'm': o.model = optarg; break;
        case 'T': o.steps = atoi(optarg); break;
        case 'B': o.batch = atoi(optarg); break;
        case 'l': o.lr = atof(optarg); break;
        case 'E': o.eval_every = atoi(optarg); break;
        case 'k': o.bucket = (size_t)atol(optarg); break;
        case 'x': o.scheme = optarg; break;
        case 'r': o.seed = strtoull(optarg, NULL, 10); break;
        case 'd': o.data = optarg; break;
        default:
            fprintf(stderr, "usage: gc_train [-n ranks] [-M full|onebit|onebit-drop|gc|gc-1bit|majority] [-s s] "
                            "[-S none|fixed:K|random:K] [-F factor] [-W extra ms] [-C ms] [-m softmax|mlp] [-T steps] [-B batch] "
                            "[-l lr] [-E eval period] [-k bucket] [-x cyclic|fractional] [-r seed] [-d dir]\n");
            return 2;
        }
    }
    if (o.steps < 1 || o.batch < 1 || o.eval_every < 1 || o.s < 0) {
        fprintf(stderr, "gc_train: -T, -B, -E must be positive, -s not negative\n");
        return 2;
    }
    /* partial steps need every rank's context to answer while it computes */
    setenv("TERSE_PROGRESS_THREAD", "1", 0);
    int xr, xs;
    int n = terse_launch_external(&xr, &xs) ? xs : o.nranks;
    return terse_launch(n, 3600, body, &o, NULL) ? 1 : 0;
}
