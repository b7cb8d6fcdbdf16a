/* fmnist.c - Fashion-MNIST loading and the examples' model (see fmnist.h). */
#include "fmnist.h"
#include "launcher.h"
#include "terse.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>


uint64_t fmnist_rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (double)(fmnist_rng(s) >> 11) * 0x1p-53; }

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

int fmnist_load(const char *dir, const char *images, const char *labels, dataset_t *ds)
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


model_t model_make(int hidden)
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

void model_init(const model_t *m, float *w, uint64_t seed)
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
double model_run(const model_t *m, const float *w, float *g, const dataset_t *ds, const int *idx,
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


void fmnist_free(dataset_t *ds)
{
    free(ds->x);
    free(ds->y);
    ds->x = NULL, ds->y = NULL;
}

size_t model_scratch(const model_t *m, int B)
{
    size_t in2 = m->hidden ? (size_t)m->hidden : 784;
    return (size_t)B * in2 + (size_t)B * 10 + (size_t)m->hidden + 1024;
}

int fmnist_setup(const struct terse_launch_ctx *ctx, const char *transport, double timeout, const char *dir,
                 struct terse_comm **comm, dataset_t *train, dataset_t *test)
{
    terse_comm_params_t cp = {.rank = ctx->rank, .size = ctx->size, .root_addr = ctx->root,
                              .secret = ctx->secret, .transport = transport, .timeout_sec = timeout};
    terse_status_t st = terse_comm_create(&cp, comm); /* an empty root: the launcher's default */
    if (st != TERSE_OK) {
        fprintf(stderr, "communicator: %s\n", terse_strerror(st));
        return -1;
    }
    if (fmnist_load(dir, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", train) ||
        fmnist_load(dir, "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", test)) {
        terse_comm_destroy(*comm);
        return -1;
    }
    return 0;
}

double fmnist_accuracy(struct terse_comm *comm, const model_t *m, const float *x, const dataset_t *test,
                       float *scratch)
{
    int n = terse_comm_size(comm), me = terse_comm_rank(comm);
    int lo = test->n * me / n, hi = test->n * (me + 1) / n, correct = 0, idx[256];
    for (int i = lo; i < hi; i += 256) {
        int cnt = hi - i < 256 ? hi - i : 256;
        for (int j = 0; j < cnt; j++)
            idx[j] = i + j;
        model_run(m, x, NULL, test, idx, cnt, scratch, &correct);
    }
    double c = correct, tot;
    terse_allreduce(comm, &c, &tot, 1, TERSE_FLOAT64, TERSE_SUM);
    return tot / test->n;
}

int fmnist_replicas_identical(struct terse_comm *comm, const float *x, size_t P)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < P * 4; i++)
        h = (h ^ ((const unsigned char *)x)[i]) * 1099511628211ull;
    int64_t hv = (int64_t)h, hmin, hmax;
    terse_allreduce(comm, &hv, &hmin, 1, TERSE_INT64, TERSE_MIN);
    terse_allreduce(comm, &hv, &hmax, 1, TERSE_INT64, TERSE_MAX);
    return hmin == hmax;
}

void fmnist_report(struct terse_comm *comm, const char *prog, int step, int status)
{
    const char *d;
    terse_comm_error(comm, &d);
    fprintf(stderr, "%s: rank %d step %d: %s (%s)\n", prog, terse_comm_rank(comm), step,
            terse_strerror((terse_status_t)status), d ? d : "");
}
