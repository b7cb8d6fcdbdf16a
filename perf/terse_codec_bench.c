/*
 * terse_codec_bench - single-core throughput of every codec against memcpy.
 *
 *   terse_codec_bench [MiB]        (default 64 MiB of float32 input)
 *
 * Prints, per codec, encode and decode-and-accumulate throughput in GB/s of
 * float32 input (best of 5 runs) and the encode+decode rate as a fraction of
 * memcpy bandwidth measured on the same buffer in the same run.
 */
#include "codec/codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64;
    size_t n = mib * (1u << 20) / sizeof(float), bytes = n * sizeof(float);
    float *x = malloc(bytes), *acc = malloc(bytes), *copy = malloc(bytes);
    terse_rng_t r = {42, 0};
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((double)(terse__rng_next(&r) >> 11) / 9007199254740992.0 - 0.5);
    memset(acc, 0, bytes);
    memset(copy, 0, bytes);
    double best = 1e9;
    for (int k = 0; k < 5; k++) {
        double t0 = now();
        memcpy(copy, x, bytes);
        double t = now() - t0;
        best = t < best ? t : best;
    }
    double memcpy_gbs = (double)bytes / best / 1e9;
    printf("# %zu MiB of float32, one core; memcpy %.2f GB/s\n", mib, memcpy_gbs);
    printf("# %-10s %12s %12s %14s %12s\n", "codec", "encode GB/s", "decode GB/s", "enc+dec GB/s", "vs memcpy");
    for (int id = TERSE_CODEC_FP32; id < TERSE_CODEC_COUNT; id++) {
        const terse_codec_ops_t *c = terse__codec((terse_codec_id_t)id);
        terse_codec_params_t p = {.ratio = 0.01, .levels = 8, .norm = 2, .bucket = 512};
        unsigned char *code = malloc(c->bound(&p, n));
        size_t len = 0;
        double be = 1e9, bd = 1e9;
        for (int k = 0; k < 5; k++) {
            double t0 = now();
            if (c->encode(&p, x, n, code, &len, &r) != TERSE_OK)
                return 1;
            double t1 = now();
            if (c->decode_add(&p, code, len, acc, n) != TERSE_OK)
                return 1;
            double t2 = now();
            be = t1 - t0 < be ? t1 - t0 : be;
            bd = t2 - t1 < bd ? t2 - t1 : bd;
        }
        double both = (double)bytes / (be + bd) / 1e9;
        printf("  %-11s %12.2f %12.2f %14.2f %11.0f%%\n", c->name, (double)bytes / be / 1e9,
               (double)bytes / bd / 1e9, both, 100 * both / memcpy_gbs);
        free(code);
    }
    free(x), free(acc), free(copy);
    return 0;
}
