/*
 * topk.c - top-k sparsification: the k = max(1, floor(ratio * n)) entries of
 * largest magnitude as (uint32 index, float value) pairs in index order.
 * Exact and deterministic: ties at the threshold go to the lower indices.
 * Biased: meant to run under error feedback. "topk+cnat8" sends each kept
 * value as its 1-byte C_nat code: (uint32 index, uint8 code) pairs.
 */
#include "codec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t topk_k(const terse_codec_params_t *p, size_t n)
{
    if (n == 0)
        return 0;
    double r = p && p->ratio > 0 ? p->ratio : 0.01;
    size_t k = (size_t)floor(r * (double)n);
    return k < 1 ? 1 : k > n ? n : k;
}

static size_t topk_bound(const terse_codec_params_t *p, size_t n)
{
    return TERSE_CODEC_HDR + 4 + 8 * topk_k(p, n);
}

static size_t topkc_bound(const terse_codec_params_t *p, size_t n)
{
    return TERSE_CODEC_HDR + 4 + 5 * topk_k(p, n);
}

/* k-th largest of v[0..n) (1-based k), by quickselect with a median-of-three
 * pivot and a three-way partition (so runs of equal values cannot stall it);
 * v is scrambled. */
static float kth_largest(float *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n, want = k - 1; /* answer lies in v[lo..hi) */
    while (hi - lo > 1) {
        float a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi - 1];
        float pivot = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        /* order: [greater | equal | less] */
        size_t gt = lo, i = lo, lt = hi;
        while (i < lt) {
            if (v[i] > pivot) {
                float t = v[i]; v[i] = v[gt]; v[gt] = t;
                gt++, i++;
            } else if (v[i] < pivot) {
                lt--;
                float t = v[i]; v[i] = v[lt]; v[lt] = t;
            } else {
                i++;
            }
        }
        if (want < gt)
            hi = gt;
        else if (want < lt)
            return pivot;
        else
            lo = lt;
    }
    return v[lo];
}

/* The k largest magnitudes of x, as ascending indices into idx. */
static terse_status_t topk_select(const float *x, size_t n, size_t k, uint32_t *idx)
{
    if (!k)
        return TERSE_OK;
    float *mag = malloc(n * sizeof(float));
    if (!mag)
        return TERSE_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++)
        mag[i] = fabsf(x[i]);
    float thr = kth_largest(mag, n, k);
    free(mag);
    size_t above = 0;
    for (size_t i = 0; i < n; i++)
        above += fabsf(x[i]) > thr;
    size_t ties = k - above, w = 0; /* entries equal to thr taken, lowest index first */
    for (size_t i = 0; i < n && w < k; i++) {
        float a = fabsf(x[i]);
        if (a > thr || (a == thr && ties && ties--))
            idx[w++] = (uint32_t)i;
    }
    return TERSE_OK;
}

/* Shared by both formats: vsz = 4 (float) or 1 (C_nat byte). */
static terse_status_t topk_encode_as(terse_codec_id_t id, size_t vsz, const terse_codec_params_t *p,
                                     const float *x, size_t n, void *out, size_t *len, terse_rng_t *rng)
{
    if (terse__codec_nonfinite(x, n) || n > UINT32_MAX)
        return TERSE_ERR_INVALID_ARG;
    size_t k = topk_k(p, n);
    terse__codec_put_hdr(out, id, n);
    unsigned char *q = (unsigned char *)out + TERSE_CODEC_HDR;
    uint32_t k32 = (uint32_t)k;
    memcpy(q, &k32, 4);
    unsigned char *pairs = q + 4;
    uint32_t *idx = malloc((k ? k : 1) * sizeof(uint32_t));
    if (!idx)
        return TERSE_ERR_NO_MEMORY;
    terse_status_t st = topk_select(x, n, k, idx);
    for (size_t j = 0; st == TERSE_OK && j < k; j++) {
        unsigned char *e = pairs + (4 + vsz) * j;
        memcpy(e, &idx[j], 4);
        if (vsz == 4)
            memcpy(e + 4, &x[idx[j]], 4);
        else
            e[4] = terse__cnat8_quantize(x[idx[j]], (uint32_t)(terse__rng_next(rng) >> 41));
    }
    free(idx);
    *len = TERSE_CODEC_HDR + 4 + (4 + vsz) * k;
    return st;
}

static terse_status_t topk_decode_as(terse_codec_id_t id, size_t vsz, const void *code, size_t len,
                                     float *acc, size_t n)
{
    if (terse__codec_check_hdr(code, len, id, n) || len < TERSE_CODEC_HDR + 4)
        return TERSE_ERR_PROTOCOL;
    const unsigned char *q = (const unsigned char *)code + TERSE_CODEC_HDR;
    uint32_t k;
    memcpy(&k, q, 4);
    if (k > n || len != TERSE_CODEC_HDR + 4 + (4 + vsz) * (size_t)k)
        return TERSE_ERR_PROTOCOL;
    /* validate everything before touching acc */
    const unsigned char *pairs = q + 4;
    int64_t prev = -1;
    for (uint32_t j = 0; j < k; j++) {
        uint32_t idx;
        float v = 0;
        memcpy(&idx, pairs + (4 + vsz) * j, 4);
        if (vsz == 4)
            memcpy(&v, pairs + 8 * j + 4, 4);
        if ((int64_t)idx <= prev || idx >= n || !isfinite(v))
            return TERSE_ERR_PROTOCOL;
        prev = idx;
    }
    for (uint32_t j = 0; j < k; j++) {
        const unsigned char *e = pairs + (4 + vsz) * j;
        uint32_t idx;
        float v;
        memcpy(&idx, e, 4);
        if (vsz == 4)
            memcpy(&v, e + 4, 4);
        else
            v = terse__cnat8_value(e[4]);
        acc[idx] += v;
    }
    return TERSE_OK;
}

static terse_status_t topk_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    return topk_encode_as(TERSE_CODEC_TOPK, 4, p, x, n, out, len, rng);
}
static terse_status_t topk_decode_add(const terse_codec_params_t *p, const void *code, size_t len,
                                      float *acc, size_t n)
{
    (void)p;
    return topk_decode_as(TERSE_CODEC_TOPK, 4, code, len, acc, n);
}
static terse_status_t topkc_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                   size_t *len, terse_rng_t *rng)
{
    return topk_encode_as(TERSE_CODEC_TOPK_CNAT, 1, p, x, n, out, len, rng);
}
static terse_status_t topkc_decode_add(const terse_codec_params_t *p, const void *code, size_t len,
                                       float *acc, size_t n)
{
    (void)p;
    return topk_decode_as(TERSE_CODEC_TOPK_CNAT, 1, code, len, acc, n);
}

const terse_codec_ops_t terse_codec_topk = {TERSE_CODEC_TOPK, "topk", 0, topk_bound, topk_encode,
                                            topk_decode_add, 1, 0, NULL, NULL};
const terse_codec_ops_t terse_codec_topk_cnat = {TERSE_CODEC_TOPK_CNAT, "topk+cnat8", 1, topkc_bound,
                                                 topkc_encode, topkc_decode_add, 1, 0, NULL, NULL};
