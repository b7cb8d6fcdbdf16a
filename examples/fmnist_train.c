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
 * Every rank holds the same model; it checks at the end that all replicas are
 * bit-identical. Rank 0 prints one RESULT line per epoch.
 */
#include "launcher.h"
#include "terse.h"

#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

typedef struct {
    const char *model, *method, *data, *transport;
    int epochs, batch, hidden, H, nranks;
    double lr, momentum, ratio;
    uint64_t seed;
} opts_t;

typedef struct {
    int n, dim;
    float *x;   /* n x 784, standardised */
    uint8_t *y; /* n labels */
} dataset_t;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1p-53; }

/* Read a gzipped IDX file whole; checks the magic and the sizes. */
static unsigned char *read_idx(const char *dir, const char *name, int want_dims, int *count, size_t *len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    gzFile f = gzopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fmnist_train: cannot open %s (apt-get install dataset-fashion-mnist)\n", path);
        return NULL;
    }
    unsigned char hdr[16];
    int hl = 4 + 4 * want_dims;
    if (gzread(f, hdr, (unsigned)hl) != hl || hdr[0] || hdr[1] || hdr[3] != want_dims) {
        fprintf(stderr, "fmnist_train: %s is not an IDX file with %d dimensions\n", path, want_dims);
        gzclose(f);
        return NULL;
    }
    size_t total = 1;
    for (int d = 0; d < want_dims; d++) {
        uint32_t v = (uint32_t)hdr[4 + 4 * d] << 24 | (uint32_t)hdr[5 + 4 * d] << 16 |
                     (uint32_t)hdr[6 + 4 * d] << 8 | hdr[7 + 4 * d];
        if (d == 0)
            *count = (int)v;
        total *= v;
    }
    unsigned char *buf = malloc(total);
    if (!buf || gzread(f, buf, (unsigned)total) != (int)total) {
        fprintf(stderr, "fmnist_train: %s is truncated\n", path);
        free(buf);
        gzclose(f);
        return NULL;
    }
    gzclose(f);
    *len = total;
    return buf;
}

static int load(const char *dir, const char *images, const char *labels, dataset_t *ds)
{
    int n1, n2;
    size_t l1, l2;
    unsigned char *img = read_idx(dir, images, 3, &n1, &l1), *lab = read_idx(dir, labels, 1, &n2, &l2);
    if (!img || !lab || n1 != n2 || l1 != (size_t)n1 * 784) {
        free(img), free(lab);
        return -1;
    }
    ds->n = n1;
    ds->dim = 784;
    ds->x = malloc(l1 * sizeof(float));
    ds->y = lab;
    /* Fashion-MNIST pixel mean and standard deviation */
    for (size_t i = 0; i < l1; i++)
        ds->x[i] = ((float)img[i] / 255.0f - 0.2860f) / 0.3530f;
    free(img);
    return 0;
}

/* ---- model: softmax regression or one hidden ReLU layer ----------------- */

typedef struct {
    int hidden; /* 0: softmax regression */
    size_t nparams;
    size_t w1, b1, w2, b2; /* offsets into the flat parameter vector */
} model_t;

static model_t model_make(int hidden)
{
    model_t m = {.hidden = hidden};
    if (!hidden) {
        m.w2 = 0, m.b2 = 784 * 10, m.nparams = 784 * 10 + 10;
    } else {
        m.w1 = 0, m.b1 = (size_t)784 * hidden, m.w2 = m.b1 + (size_t)hidden;
        m.b2 = m.w2 + (size_t)hidden * 10, m.nparams = m.b2 + 10;
    }
    return m;
}

static void model_init(const model_t *m, float *w, uint64_t seed)
{
    uint64_t s = seed;
    memset(w, 0, m->nparams * sizeof(float));
    int in2 = m->hidden ? m->hidden : 784;
    if (m->hidden) {
        double a = sqrt(6.0 / (784 + m->hidden));
        for (size_t i = 0; i < (size_t)784 * m->hidden; i++)
            w[m->w1 + i] = (float)((2 * rng_unit(&s) - 1) * a);
    }
    double a = sqrt(6.0 / (in2 + 10));
    for (size_t i = 0; i < (size_t)in2 * 10; i++)
        w[m->w2 + i] = (float)((2 * rng_unit(&s) - 1) * a);
}

/* Forward (and, with g, backward) on samples idx[0..B); returns the summed loss
 * and counts correct predictions. g gets the gradient of the mean loss. */
static double model_run(const model_t *m, const float *w, float *g, const dataset_t *ds, const int *idx,
                        int B, float *scratch, int *correct)
{
    int H = m->hidden, in2 = H ? H : 784;
    float *h = scratch, *dl = scratch + (size_t)B * in2, *dh = dl + (size_t)B * 10;
    double loss = 0;
    if (g)
        memset(g, 0, m->nparams * sizeof(float));
    for (int b = 0; b < B; b++) {
        const float *x = ds->x + (size_t)idx[b] * 784;
        float *hb = h + (size_t)b * in2;
        if (H) {
            memcpy(hb, w + m->b1, (size_t)H * sizeof(float));
            for (int k = 0; k < 784; k++) {
                float xk = x[k];
                const float *wk = w + m->w1 + (size_t)k * H;
                for (int j = 0; j < H; j++)
                    hb[j] += xk * wk[j];
            }
            for (int j = 0; j < H; j++)
                hb[j] = hb[j] > 0 ? hb[j] : 0;
        } else {
            memcpy(hb, x, 784 * sizeof(float));
        }
        float z[10];
        memcpy(z, w + m->b2, sizeof(z));
        for (int j = 0; j < in2; j++) {
            float hj = hb[j];
            const float *wj = w + m->w2 + (size_t)j * 10;
            for (int c = 0; c < 10; c++)
                z[c] += hj * wj[c];
        }
        float mx = z[0];
        int arg = 0;
        for (int c = 1; c < 10; c++)
            if (z[c] > mx)
                mx = z[c], arg = c;
        double sum = 0;
        for (int c = 0; c < 10; c++)
            sum += exp((double)(z[c] - mx));
        int y = ds->y[idx[b]];
        loss += log(sum) - (double)(z[y] - mx);
        *correct += arg == y;
        if (g)
            for (int c = 0; c < 10; c++)
                dl[(size_t)b * 10 + c] = (float)((exp((double)(z[c] - mx)) / sum - (c == y)) / B);
    }
    if (!g)
        return loss;
    for (int b = 0; b < B; b++) {
        const float *hb = h + (size_t)b * in2, *db = dl + (size_t)b * 10;
        for (int c = 0; c < 10; c++)
            g[m->b2 + c] += db[c];
        for (int j = 0; j < in2; j++) {
            float hj = hb[j];
            float *gj = g + m->w2 + (size_t)j * 10;
            for (int c = 0; c < 10; c++)
                gj[c] += hj * db[c];
        }
        if (!H)
            continue;
        float *dhb = dh;
        for (int j = 0; j < H; j++) {
            float s = 0;
            const float *wj = w + m->w2 + (size_t)j * 10;
            for (int c = 0; c < 10; c++)
                s += db[c] * wj[c];
            dhb[j] = hb[j] > 0 ? s : 0;
            g[m->b1 + j] += dhb[j];
        }
        const float *x = ds->x + (size_t)idx[b] * 784;
        for (int k = 0; k < 784; k++) {
            float xk = x[k];
            float *gk = g + m->w1 + (size_t)k * H;
            for (int j = 0; j < H; j++)
                gk[j] += xk * dhb[j];
        }
    }
    return loss;
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
    terse_comm_params_t cp = {.rank = ctx->rank, .size = ctx->size, .root_addr = ctx->root,
                              .secret = ctx->secret, .transport = o->transport, .timeout_sec = 120};
    terse_status_t st = ctx->root[0] ? terse_comm_create(&cp, &comm) : terse_comm_create_from_env(&comm);
    if (st != TERSE_OK) {
        fprintf(stderr, "fmnist_train: communicator: %s\n", terse_strerror(st));
        return 1;
    }
    int n = terse_comm_size(comm), me = terse_comm_rank(comm);
    dataset_t train, test;
    if (load(o->data, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", &train) ||
        load(o->data, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", &test))
        return 1;
    model_t m = model_make(!strcmp(o->model, "mlp") ? o->hidden : 0);
    size_t P = m.nparams;
    float *x = malloc(P * 4), *y = malloc(P * 4), *g = malloc(P * 4), *mom = calloc(P, 4);
    float *u = malloc(P * 4), *delta = malloc(P * 4);
    int B = o->batch, in2 = m.hidden ? m.hidden : 784;
    size_t sb = B > 256 ? (size_t)B : 256; /* training batch or evaluation block */
    float *scratch = malloc((sb * (size_t)in2 + sb * 10 + (size_t)(m.hidden + 1)) * 4 + 4096);
    model_init(&m, x, o->seed);

    int full = !strcmp(o->method, "full"), step_ahead = 0;
    terse_compressed_t *cz = NULL;
    if (!full) {
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
            int j = (int)(rng_next(&shuffle) % (uint64_t)(i + 1)), t = order[i];
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
            for (size_t i = 0; i < P; i++) {
                mom[i] = (float)o->momentum * mom[i] + g[i];
                u[i] = (float)o->lr * mom[i];
            }
            st = full ? terse_allreduce(comm, u, delta, P, TERSE_FLOAT32, TERSE_AVG)
                      : terse_compressed_allreduce(cz, u, delta);
            if (st != TERSE_OK) {
                const char *d;
                terse_comm_error(comm, &d);
                fprintf(stderr, "fmnist_train: rank %d step %d: %s (%s)\n", me, s, terse_strerror(st), d ? d : "");
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
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < P * 4; i++)
        h = (h ^ ((unsigned char *)x)[i]) * 1099511628211ull;
    int64_t hv = (int64_t)h, hmin, hmax;
    terse_allreduce(comm, &hv, &hmin, 1, TERSE_INT64, TERSE_MIN);
    terse_allreduce(comm, &hv, &hmax, 1, TERSE_INT64, TERSE_MAX);
    if (me == 0)
        printf("# replicas %s\n", hmin == hmax ? "bit-identical on every rank" : "DIFFER");
    terse_compressed_destroy(cz);
    terse_comm_destroy(comm);
    free(x), free(y), free(g), free(mom), free(u), free(delta), free(scratch), free(order), free(tidx);
    free(train.x), free(train.y), free(test.x), free(test.y);
    return hmin == hmax ? 0 : 1;
}

int main(int argc, char **argv)
{
    opts_t o = {.model = "mlp", .method = "full", .data = "/usr/share/datasets/fashion-mnist",
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
