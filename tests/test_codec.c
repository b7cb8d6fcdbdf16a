/*
 * test_codec.c - the codecs alone: exact round trips of the deterministic
 * ones, code size within the bound, unbiasedness and variance of C_nat
 * against its stated omega = 1/8 (fixed seeds, 5-sigma tolerances), scaled
 * sign and top-k semantics, the edge-value policy, and malformed codes
 * rejected without touching the accumulator.
 */
#include "codec/codec.h"
#include "dtype.h"

#include <CUnit/Basic.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static float *random_vec(size_t n, unsigned seed, double scale)
{
    float *x = malloc(n * sizeof(float));
    terse_rng_t r = {seed, 0};
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(((double)(terse__rng_next(&r) >> 11) / 9007199254740992.0 * 2 - 1) * scale);
    return x;
}

static void test_table(void)
{
    for (int id = TERSE_CODEC_FP32; id < TERSE_CODEC_COUNT; id++) {
        const terse_codec_ops_t *c = terse__codec((terse_codec_id_t)id);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        CU_ASSERT_PTR_EQUAL(terse__codec_by_name(c->name), c);
    }
    CU_ASSERT_PTR_NULL(terse__codec_by_name("nope"));
}

/* No codec writes past bound(): guard bytes after it stay, for lengths that
 * end inside a group, a byte or a bucket; with and without SIMD. */
static void test_bounds_respected(void)
{
    static const size_t ns[] = {1, 2, 3, 5, 7, 8, 9, 15, 17, 63, 65, 511, 513, 1001};
    int over = 0;
    for (int simd = 1; simd >= 0; simd--) {
        terse__codec_set_simd(simd);
        for (int id = TERSE_CODEC_FP32; id < TERSE_CODEC_COUNT; id++) {
            const terse_codec_ops_t *c = terse__codec((terse_codec_id_t)id);
            for (size_t t = 0; t < sizeof(ns) / sizeof(ns[0]); t++) {
                size_t n = ns[t];
                terse_codec_params_t p = {.ratio = 0.3, .levels = 5, .norm = 2, .bucket = 7};
                float *x = random_vec(n, 11 + n, 4.0);
                size_t bound = c->bound(&p, n), len = 0;
                unsigned char *code = malloc(bound + 64);
                memset(code, 0xA5, bound + 64);
                terse_rng_t r = {3, 0};
                CU_ASSERT_EQUAL(c->encode(&p, x, n, code, &len, &r), TERSE_OK);
                CU_ASSERT(len <= bound);
                for (size_t b = bound; b < bound + 64; b++)
                    if (code[b] != 0xA5) {
                        if (!over++)
                            printf("\n  %s, n = %zu: wrote byte %zu past its bound %zu", c->name, n, b - bound, bound);
                        break;
                    }
                free(code), free(x);
            }
        }
    }
    terse__codec_set_simd(1);
    CU_ASSERT_EQUAL(over, 0);
}

static void test_half_round_trip(void)
{
    size_t n = 10007;
    float *x = random_vec(n, 1, 100.0);
    x[0] = 0, x[1] = -0.0f, x[2] = 1e-8f, x[3] = 70000.0f, x[4] = -1e9f;
    for (int which = 0; which < 2; which++) {
        const terse_codec_ops_t *c = terse__codec(which ? TERSE_CODEC_BF16 : TERSE_CODEC_FP16);
        terse_codec_params_t p = {0};
        size_t bound = c->bound(&p, n), len = 0;
        unsigned char *code = malloc(bound);
        CU_ASSERT_EQUAL_FATAL(c->encode(&p, x, n, code, &len, NULL), TERSE_OK);
        CU_ASSERT(len <= bound);
        float *acc = calloc(n, sizeof(float));
        CU_ASSERT_EQUAL(c->decode_add(&p, code, len, acc, n), TERSE_OK);
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            float want = which ? terse__bf16_to_float(terse__float_to_bf16(x[i]))
                               : terse__half_to_float(terse__float_to_half(fmaxf(-65504, fminf(65504, x[i]))));
            bad += memcmp(&acc[i], &want, 4) != 0 && !(acc[i] == 0 && want == 0);
        }
        CU_ASSERT_EQUAL(bad, 0);
        if (!which) {
            CU_ASSERT_EQUAL(acc[3], 65504.0f); /* saturates */
            CU_ASSERT_EQUAL(acc[4], -65504.0f);
        }
        free(code), free(acc);
    }
    free(x);
}

/* C_nat: every code is a signed power of two next to the input; the mean over
 * T encodings is the input and the variance is within omega = 1/8. */
static void test_cnat_statistics(void)
{
    const terse_codec_ops_t *c = terse__codec(TERSE_CODEC_CNAT8);
    terse_codec_params_t p = {0};
    size_t n = 512, T = 4000;
    float *x = random_vec(n, 7, 10.0);
    x[0] = 0, x[1] = 1.0f, x[2] = -3.0f, x[3] = 1e-35f /* below the smallest code */, x[4] = 0.75f;
    double *sum = calloc(n, sizeof(double)), *sq = calloc(n, sizeof(double));
    unsigned char *code = malloc(c->bound(&p, n));
    float *acc = malloc(n * sizeof(float));
    terse_rng_t rng = {12345, 0};
    int not_neighbour = 0;
    for (size_t t = 0; t < T; t++) {
        size_t len;
        memset(acc, 0, n * sizeof(float));
        CU_ASSERT_EQUAL_FATAL(c->encode(&p, x, n, code, &len, &rng), TERSE_OK);
        CU_ASSERT_EQUAL_FATAL(len, c->bound(&p, n));
        CU_ASSERT_EQUAL_FATAL(c->decode_add(&p, code, len, acc, n), TERSE_OK);
        for (size_t i = 0; i < n; i++) {
            double d = acc[i];
            sum[i] += d;
            sq[i] += (d - x[i]) * (d - x[i]);
            if (i != 3 && x[i] != 0) {
                double lo = exp2(floor(log2(fabs(x[i])))), hi = 2 * lo;
                not_neighbour += fabs(d) != lo && fabs(d) != hi;
                not_neighbour += (d < 0) != (x[i] < 0);
            }
        }
    }
    CU_ASSERT_EQUAL(not_neighbour, 0);
    CU_ASSERT_EQUAL(sum[0], 0);
    CU_ASSERT_EQUAL(sum[1], (double)T); /* powers of two are exact */
    int biased = 0;
    double err = 0, norm = 0;
    for (size_t i = 0; i < n; i++) {
        double mean = sum[i] / (double)T;
        /* per-trial sd <= |x| / sqrt(8): 5 sigma of the mean of T trials */
        double tol = 5 * fabs(x[i]) / sqrt(8.0 * (double)T) + 1e-45;
        if (i == 3)
            tol = 5 * sqrt(fabs(x[i]) * 0x1p-109) / sqrt((double)T) + 1e-45; /* Bernoulli on [0, 2^-109] */
        biased += fabs(mean - x[i]) > tol;
        err += sq[i] / (double)T;
        norm += (double)x[i] * x[i];
    }
    CU_ASSERT_EQUAL(biased, 0);
    /* omega = 1/8 bounds E||C(x) - x||^2 / ||x||^2 */
    CU_ASSERT(err / norm <= 0.125 * 1.05);
    free(x), free(sum), free(sq), free(code), free(acc);
}

static void test_cnat_reproducible_and_saturating(void)
{
    const terse_codec_ops_t *c = terse__codec(TERSE_CODEC_CNAT8);
    terse_codec_params_t p = {0};
    float x[4] = {1e30f, -1e30f, 3.0f, 0.1f};
    unsigned char a[64], b[64];
    size_t la, lb;
    terse_rng_t r1 = {99, 5}, r2 = {99, 5};
    CU_ASSERT_EQUAL(c->encode(&p, x, 4, a, &la, &r1), TERSE_OK);
    CU_ASSERT_EQUAL(c->encode(&p, x, 4, b, &lb, &r2), TERSE_OK);
    CU_ASSERT(la == lb && memcmp(a, b, la) == 0); /* same stream, same code */
    float acc[4] = {0};
    CU_ASSERT_EQUAL(c->decode_add(&p, a, la, acc, 4), TERSE_OK);
    CU_ASSERT_EQUAL(acc[0], 0x1p17f);
    CU_ASSERT_EQUAL(acc[1], -0x1p17f);
}

static void test_sign(void)
{
    const terse_codec_ops_t *c = terse__codec(TERSE_CODEC_SIGN);
    terse_codec_params_t p = {0};
    float x[10] = {1, -2, 3, -4, 0, 5, -6, 7, -8, 9};
    unsigned char code[64];
    size_t len;
    CU_ASSERT_EQUAL(c->encode(&p, x, 10, code, &len, NULL), TERSE_OK);
    CU_ASSERT_EQUAL(len, TERSE_CODEC_HDR + 4 + 2);
    float acc[10] = {0};
    CU_ASSERT_EQUAL(c->decode_add(&p, code, len, acc, 10), TERSE_OK);
    for (int i = 0; i < 10; i++)
        CU_ASSERT_EQUAL(acc[i], (x[i] < 0 ? -1 : 1) * 4.5f); /* ||x||_1 / n = 45 / 10 */
}

static void test_topk(void)
{
    const terse_codec_ops_t *c = terse__codec(TERSE_CODEC_TOPK);
    terse_codec_params_t p = {.ratio = 0.3};
    float x[10] = {0.5f, -9, 3, 3, -3, 1, 8, 0, -0.1f, 2};
    unsigned char code[256];
    size_t len;
    CU_ASSERT_EQUAL(c->encode(&p, x, 10, code, &len, NULL), TERSE_OK);
    CU_ASSERT_EQUAL(len, TERSE_CODEC_HDR + 4 + 8 * 3); /* k = floor(0.3 * 10) */
    float acc[10] = {0};
    CU_ASSERT_EQUAL(c->decode_add(&p, code, len, acc, 10), TERSE_OK);
    /* -9, 8 and the lowest-index 3 of the three tied |3| */
    float want[10] = {0, -9, 3, 0, 0, 0, 8, 0, 0, 0};
    CU_ASSERT_EQUAL(memcmp(acc, want, sizeof(want)), 0);
    /* k is at least 1; large random vectors select exactly k */
    terse_codec_params_t tiny = {.ratio = 1e-9};
    CU_ASSERT_EQUAL(c->bound(&tiny, 10), TERSE_CODEC_HDR + 4 + 8);
    size_t n = 100003;
    float *y = random_vec(n, 3, 1.0), *ya = calloc(n, sizeof(float));
    terse_codec_params_t one = {.ratio = 0.01};
    unsigned char *big = malloc(c->bound(&one, n));
    CU_ASSERT_EQUAL(c->encode(&one, y, n, big, &len, NULL), TERSE_OK);
    CU_ASSERT_EQUAL(c->decode_add(&one, big, len, ya, n), TERSE_OK);
    size_t kept = 0;
    float minkept = INFINITY, maxdropped = 0;
    for (size_t i = 0; i < n; i++) {
        if (ya[i] != 0) {
            kept++;
            minkept = fminf(minkept, fabsf(y[i]));
        } else {
            maxdropped = fmaxf(maxdropped, fabsf(y[i]));
        }
    }
    CU_ASSERT_EQUAL(kept, 1000);
    CU_ASSERT(minkept >= maxdropped);
    free(y), free(ya), free(big);
}

/* Non-finite input is refused; malformed codes are refused and acc stays. */
static void test_edges_and_malformed(void)
{
    float bad[3] = {1, NAN, 2}, inf[2] = {INFINITY, 0}, ok[8] = {1, -2, 3, -4, 5, -6, 7, -8};
    terse_codec_params_t p = {.ratio = 0.5};
    terse_rng_t rng = {1, 0};
    for (int id = TERSE_CODEC_FP32; id < TERSE_CODEC_COUNT; id++) {
        const terse_codec_ops_t *c = terse__codec((terse_codec_id_t)id);
        unsigned char code[512];
        size_t len;
        CU_ASSERT_EQUAL(c->encode(&p, bad, 3, code, &len, &rng), TERSE_ERR_INVALID_ARG);
        CU_ASSERT_EQUAL(c->encode(&p, inf, 2, code, &len, &rng), TERSE_ERR_INVALID_ARG);
        CU_ASSERT_EQUAL_FATAL(c->encode(&p, ok, 8, code, &len, &rng), TERSE_OK);
        float acc[8] = {7, 7, 7, 7, 7, 7, 7, 7}, keep[8];
        memcpy(keep, acc, sizeof(acc));
        CU_ASSERT_EQUAL(c->decode_add(&p, code, len - 1, acc, 8), TERSE_ERR_PROTOCOL); /* truncated */
        CU_ASSERT_EQUAL(c->decode_add(&p, code, len, acc, 9), TERSE_ERR_PROTOCOL);     /* wrong n */
        CU_ASSERT_EQUAL(c->decode_add(&p, code, 5, acc, 8), TERSE_ERR_PROTOCOL);       /* no header */
        unsigned char other[512];
        memcpy(other, code, len);
        other[2] ^= 0x7f; /* another codec's id */
        CU_ASSERT_EQUAL(c->decode_add(&p, other, len, acc, 8), TERSE_ERR_PROTOCOL);
        memcpy(other, code, len);
        other[0] ^= 1; /* bad magic */
        CU_ASSERT_EQUAL(c->decode_add(&p, other, len, acc, 8), TERSE_ERR_PROTOCOL);
        /* a poisoned code (a peer's NaN input) is never decoded */
        terse__codec_put_poison(other, c->id, 8, len);
        CU_ASSERT(terse__codec_poisoned(other, len));
        CU_ASSERT(!terse__codec_poisoned(code, len));
        CU_ASSERT_EQUAL(c->decode_add(&p, other, len, acc, 8), TERSE_ERR_PROTOCOL);
        CU_ASSERT_EQUAL(memcmp(acc, keep, sizeof(acc)), 0);
        /* n = 0 is a valid, empty code */
        CU_ASSERT_EQUAL(c->encode(&p, ok, 0, code, &len, &rng), TERSE_OK);
        CU_ASSERT_EQUAL(c->decode_add(&p, code, len, acc, 0), TERSE_OK);
    }
    /* top-k: indices out of order or out of range */
    const terse_codec_ops_t *t = terse__codec(TERSE_CODEC_TOPK);
    unsigned char code[512];
    size_t len;
    CU_ASSERT_EQUAL(t->encode(&p, ok, 8, code, &len, NULL), TERSE_OK);
    uint32_t idx = 8;
    unsigned char bad1[512];
    memcpy(bad1, code, len);
    memcpy(bad1 + TERSE_CODEC_HDR + 4, &idx, 4); /* index 8 >= n */
    float acc[8] = {0};
    CU_ASSERT_EQUAL(t->decode_add(&p, bad1, len, acc, 8), TERSE_ERR_PROTOCOL);
    memcpy(bad1, code, len);
    memcpy(bad1 + TERSE_CODEC_HDR + 4 + 8, bad1 + TERSE_CODEC_HDR + 4, 4); /* duplicate index */
    CU_ASSERT_EQUAL(t->decode_add(&p, bad1, len, acc, 8), TERSE_ERR_PROTOCOL);
    /* scaled sign: a NaN scale */
    const terse_codec_ops_t *sg = terse__codec(TERSE_CODEC_SIGN);
    CU_ASSERT_EQUAL(sg->encode(&p, ok, 8, code, &len, NULL), TERSE_OK);
    float nan = NAN;
    memcpy(code + TERSE_CODEC_HDR, &nan, 4);
    CU_ASSERT_EQUAL(sg->decode_add(&p, code, len, acc, 8), TERSE_ERR_PROTOCOL);
    for (int i = 0; i < 8; i++)
        CU_ASSERT_EQUAL(acc[i], 0);
}


/*
 * The unbiased codecs against their stated omega: T encodings of one vector
 * with fresh random numbers; every coordinate's mean within 5 standard
 * errors (from the sample variance) of x, and the measured
 * E||C(x) - x||^2 / ||x||^2 below omega with a 5-sigma margin.
 */
typedef struct {
    terse_codec_id_t id;
    terse_codec_params_t p;
    double omega; /* stated bound; < 0: computed per case below */
} unbiased_case_t;

static void run_unbiased(const unbiased_case_t *uc, const float *x, size_t n, size_t T)
{
    const terse_codec_ops_t *c = terse__codec(uc->id);
    terse_codec_params_t p = uc->p;
    double *sum = calloc(n, sizeof(double)), *sq = calloc(n, sizeof(double)), *tot = calloc(T, sizeof(double));
    unsigned char *code = malloc(c->bound(&p, n));
    float *acc = malloc(n * sizeof(float));
    terse_rng_t rng = {777 + (uint64_t)uc->id, 0};
    double norm = 0;
    for (size_t i = 0; i < n; i++)
        norm += (double)x[i] * x[i];
    for (size_t t = 0; t < T; t++) {
        size_t len;
        p.shared_seed = 0x1234 + t; /* random-k: a new shared draw per step */
        memset(acc, 0, n * sizeof(float));
        CU_ASSERT_EQUAL_FATAL(c->encode(&p, x, n, code, &len, &rng), TERSE_OK);
        CU_ASSERT_EQUAL_FATAL(len, c->bound(&p, n));
        CU_ASSERT_EQUAL_FATAL(c->decode_add(&p, code, len, acc, n), TERSE_OK);
        for (size_t i = 0; i < n; i++) {
            double d = (double)acc[i] - x[i];
            sum[i] += acc[i];
            sq[i] += d * d;
            tot[t] += d * d;
        }
    }
    int biased = 0;
    for (size_t i = 0; i < n; i++) {
        double mean = sum[i] / (double)T, var = sq[i] / (double)T - (mean - x[i]) * (mean - x[i]);
        /* the sample variance misses rare roundings (a mantissa of 4e-4 rounds up about
         * once in 3000 trials): add the codec's own bound omega x^2 to it */
        double tol = 5 * sqrt((fmax(var, 0) + uc->omega * (double)x[i] * x[i]) / (double)T) + 1e-30;
        if (fabs(mean - x[i]) > tol) {
            if (biased < 3)
                printf("\n  %s: x[%zu] = %g, mean %g, tolerance %g", c->name, i, x[i], mean, tol);
            biased++;
        }
    }
    CU_ASSERT_EQUAL(biased, 0);
    double m = 0, v = 0;
    for (size_t t = 0; t < T; t++)
        m += tot[t] / (double)T;
    for (size_t t = 0; t < T; t++)
        v += (tot[t] - m) * (tot[t] - m) / (double)T;
    double measured = m / norm, margin = 5 * sqrt(v / (double)T) / norm;
    printf("\n  %s: E||C(x)-x||^2/||x||^2 = %.4f (omega %.4f)", c->name, measured, uc->omega);
    CU_ASSERT(measured <= uc->omega + margin);
    free(sum), free(sq), free(tot), free(code), free(acc);
}

static void test_unbiased_codecs(void)
{
    size_t n = 256, T = 3000;
    float *x = random_vec(n, 99, 3.0);
    x[0] = 0, x[1] = 1.0f, x[2] = -0.5f, x[3] = 1e-3f, x[4] = -1e-40f /* subnormal */;
    double d = 64, s = 4; /* natdither: bucket 64, 4 levels, 2-norm (r = 2) */
    double nd = sqrt(d) * exp2(1 - s);
    double qs = 8; /* qsgd: 8 levels, bucket 64, 2-norm: omega = min(d/s^2, sqrt(d)/s) */
    unbiased_case_t cases[] = {
        {TERSE_CODEC_CNAT9, {.ratio = 0}, 0.125},
        {TERSE_CODEC_NATDITHER, {.levels = 4, .norm = 2, .bucket = 64}, 0.125 + nd * fmin(1, nd)},
        {TERSE_CODEC_QSGD, {.levels = 8, .norm = 2, .bucket = 64}, fmin(d / (qs * qs), sqrt(d) / qs)},
        {TERSE_CODEC_RANDK, {.ratio = 0.25}, 1 / 0.25 - 1},
        /* composition of independent unbiased codecs: omega1 omega2 + omega1 + omega2 */
        {TERSE_CODEC_RANDK_CNAT, {.ratio = 0.25}, 3 * 0.125 + 3 + 0.125},
        {TERSE_CODEC_SIGN1, {.bucket = 64}, -1},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        if (cases[k].omega < 0) {
            /* 1-bit: per value the variance is exactly R^2 - x^2, R the bucket's max */
            double tot = 0, norm = 0;
            for (size_t b = 0; b < n; b += 64) {
                double r = 0;
                for (size_t i = b; i < b + 64; i++)
                    r = fmax(r, fabs(x[i]));
                for (size_t i = b; i < b + 64; i++)
                    tot += r * r - (double)x[i] * x[i];
            }
            for (size_t i = 0; i < n; i++)
                norm += (double)x[i] * x[i];
            cases[k].omega = tot / norm;
        }
        run_unbiased(&cases[k], x, n, T);
    }
    free(x);
}

/* Edge values of the 9-bit format: exact powers of two, subnormals, the top. */
static void test_cnat9_edges(void)
{
    const terse_codec_ops_t *c = terse__codec(TERSE_CODEC_CNAT9);
    terse_codec_params_t p = {0};
    float x[11] = {0, -0.0f, 1, -2, 0x1p-126f, 0x1p127f, -0x1p-100f, 3e38f, 1e-45f, FLT_MAX, 0.75f};
    unsigned char code[64];
    size_t len;
    terse_rng_t rng = {5, 0};
    float acc[11] = {0};
    CU_ASSERT_EQUAL_FATAL(c->encode(&p, x, 11, code, &len, &rng), TERSE_OK);
    CU_ASSERT_EQUAL(len, TERSE_CODEC_HDR + 11 + 2);
    CU_ASSERT_EQUAL_FATAL(c->decode_add(&p, code, len, acc, 11), TERSE_OK);
    CU_ASSERT_EQUAL(acc[0], 0);
    CU_ASSERT(acc[1] == 0 && !signbit(acc[1])); /* -0 decodes as +0 */
    CU_ASSERT_EQUAL(acc[2], 1);
    CU_ASSERT_EQUAL(acc[3], -2);
    CU_ASSERT_EQUAL(acc[4], 0x1p-126f);
    CU_ASSERT_EQUAL(acc[5], 0x1p127f);
    CU_ASSERT_EQUAL(acc[6], -0x1p-100f);
    CU_ASSERT(acc[7] == 0x1p127f || acc[7] == 0x1p127f); /* rounds up to 2^128: saturates */
    CU_ASSERT(acc[8] == 0 || acc[8] == 0x1p-126f);        /* subnormal: 0 or the smallest normal */
    CU_ASSERT_EQUAL(acc[9], 0x1p127f);
    CU_ASSERT(acc[10] == 0.5f || acc[10] == 1.0f);
    /* an exponent byte of 255 would decode to infinity: refused */
    code[TERSE_CODEC_HDR + 1] = 255;
    float keep[11];
    memcpy(keep, acc, sizeof(acc));
    CU_ASSERT_EQUAL(c->decode_add(&p, code, len, acc, 11), TERSE_ERR_PROTOCOL);
    CU_ASSERT_EQUAL(memcmp(acc, keep, sizeof(acc)), 0);
}

/* The AVX-512 paths and the portable ones produce the same bytes and sums. */
static void test_simd_matches_portable(void)
{
    if (!terse__codec_simd()) {
        printf("\n  SKIP: this CPU has no AVX-512; only the portable path exists here");
        return;
    }
    size_t n = 100003;
    float *x = random_vec(n, 31, 5.0);
    x[0] = 0, x[1] = -0.0f, x[2] = 1e-35f, x[3] = -1e-40f, x[4] = 3e38f, x[5] = -1.0f, x[17] = 0x1p-109f;
    const terse_codec_id_t ids[] = {TERSE_CODEC_CNAT8, TERSE_CODEC_SIGN};
    for (int k = 0; k < 2; k++) {
        const terse_codec_ops_t *c = terse__codec(ids[k]);
        terse_codec_params_t p = {0};
        size_t b = c->bound(&p, n), l1, l2;
        unsigned char *c1 = malloc(b), *c2 = malloc(b);
        float *a1 = calloc(n, 4), *a2 = calloc(n, 4);
        terse_rng_t r1 = {9, 0}, r2 = {9, 0};
        terse__codec_set_simd(1);
        CU_ASSERT_EQUAL_FATAL(c->encode(&p, x, n, c1, &l1, &r1), TERSE_OK);
        CU_ASSERT_EQUAL(c->decode_add(&p, c1, l1, a1, n), TERSE_OK);
        terse__codec_set_simd(0);
        CU_ASSERT_EQUAL_FATAL(c->encode(&p, x, n, c2, &l2, &r2), TERSE_OK);
        CU_ASSERT_EQUAL(c->decode_add(&p, c2, l2, a2, n), TERSE_OK);
        terse__codec_set_simd(1);
        CU_ASSERT_EQUAL(l1, l2);
        CU_ASSERT_EQUAL(memcmp(c1, c2, l1), 0);
        CU_ASSERT_EQUAL(memcmp(a1, a2, n * 4), 0);
        /* NaN late in the vector is caught by the fused check on both paths */
        float keep = x[n - 20];
        x[n - 20] = NAN;
        CU_ASSERT_EQUAL(c->encode(&p, x, n, c1, &l1, &r1), TERSE_ERR_INVALID_ARG);
        terse__codec_set_simd(0);
        CU_ASSERT_EQUAL(c->encode(&p, x, n, c1, &l1, &r1), TERSE_ERR_INVALID_ARG);
        terse__codec_set_simd(1);
        x[n - 20] = keep;
        free(c1), free(c2), free(a1), free(a2);
    }
    free(x);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite("codecs", NULL, NULL);
    CU_add_test(s, "codec table", test_table);
    CU_add_test(s, "fp16 and bf16 round trips", test_half_round_trip);
    CU_add_test(s, "C_nat: unbiased, variance within 1/8", test_cnat_statistics);
    CU_add_test(s, "C_nat: reproducible stream, saturation", test_cnat_reproducible_and_saturating);
    CU_add_test(s, "scaled sign", test_sign);
    CU_add_test(s, "top-k selection", test_topk);
    CU_add_test(s, "non-finite input and malformed codes", test_edges_and_malformed);
    CU_add_test(s, "no codec writes past its bound", test_bounds_respected);
    CU_add_test(s, "unbiased codecs against their omega", test_unbiased_codecs);
    CU_add_test(s, "9-bit C_nat edge values", test_cnat9_edges);
    CU_add_test(s, "AVX-512 and portable paths agree bit for bit", test_simd_matches_portable);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failures = (int)CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
