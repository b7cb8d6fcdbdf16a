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
    for (int id = TERSE_CODEC_FP16; id < TERSE_CODEC_COUNT; id++) {
        const terse_codec_ops_t *c = terse__codec((terse_codec_id_t)id);
        CU_ASSERT_PTR_NOT_NULL_FATAL(c);
        CU_ASSERT_PTR_EQUAL(terse__codec_by_name(c->name), c);
    }
    CU_ASSERT_PTR_NULL(terse__codec_by_name("nope"));
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
    for (int id = TERSE_CODEC_FP16; id < TERSE_CODEC_COUNT; id++) {
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
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failures = (int)CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
