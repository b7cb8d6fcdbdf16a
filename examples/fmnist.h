/*
 * fmnist.h - what the Fashion-MNIST examples share: the IDX loader (gzipped
 * files of Debian's dataset-fashion-mnist) and a small model - softmax
 * regression or one hidden ReLU layer - with forward and backward passes
 * over a flat parameter vector.
 */
#ifndef TERSE_EXAMPLES_FMNIST_H
#define TERSE_EXAMPLES_FMNIST_H

#include <stddef.h>
#include <stdint.h>

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct {
    int n, dim;
    float *x;   /* n x 784, standardised */
    uint8_t *y; /* n labels */
} dataset_t;

/* 0, or -1 with the reason on stderr. */
int fmnist_load(const char *dir, const char *images, const char *labels, dataset_t *ds);
void fmnist_free(dataset_t *ds);

typedef struct {
    int hidden; /* 0: softmax regression */
    size_t nparams;
    size_t w1, b1, w2, b2; /* offsets into the flat parameter vector */
} model_t;

model_t model_make(int hidden);
/* Glorot-uniform weights, zero biases; the same on every rank for one seed. */
void model_init(const model_t *m, float *w, uint64_t seed);
/* Floats of scratch model_run needs for batches of up to B samples. */
size_t model_scratch(const model_t *m, int B);
/* Forward (and, with g, backward) on samples idx[0..B): returns the summed
 * loss, counts correct predictions; g gets the gradient of the mean loss. */
double model_run(const model_t *m, const float *w, float *g, const dataset_t *ds, const int *idx, int B,
                 float *scratch, int *correct);

uint64_t fmnist_rng(uint64_t *s);

struct terse_launch_ctx;
struct terse_comm;
/* What both examples do first on a rank: the communicator (from the local
 * launcher's context, or the environment under mpirun/srun) and the
 * training and test sets. 0, or -1 with the reason on stderr. */
int fmnist_setup(const struct terse_launch_ctx *ctx, const char *transport, double timeout,
                 const char *dir, struct terse_comm **comm, dataset_t *train, dataset_t *test);
/* Test accuracy of x: each rank scores a slice, counts summed over ranks. */
double fmnist_accuracy(struct terse_comm *comm, const model_t *m, const float *x, const dataset_t *test,
                       float *scratch);

/* 1 when x[0..P) holds the same bits on every rank (a hash, its min and max over the ranks). */
int fmnist_replicas_identical(struct terse_comm *comm, const float *x, size_t P);
/* A failed step on stderr, with the communicator's explanation of it. */
void fmnist_report(struct terse_comm *comm, const char *prog, int step, int status);

#endif
