/*
 * topk.c - top-k sparsification: the k = max(1, floor(ratio * n)) entries of
 * largest magnitude as (uint32 index, float value) pairs in index order.
 * Exact and deterministic: ties at the threshold go to the lower indices.
 * Biased: meant to run under error feedback. "topk+cnat8" sends each kept
 * value as its 1-byte C_nat code: (uint32 index, uint8 code) pairs.
 */
#include "codec.h"
#include "topk_select.h"

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

/* Shared by both formats: vsz = 4 (float) or 1 (C_nat byte). With e_out,
 * error feedback in the same pass: x = u + e_in goes to e_out, which then
 * holds the residual x - decode(code) (zero, or the C_nat rounding, at the
 * kept entries), the same bits as the generic feedback path. */
static terse_status_t topk_encode_as(terse_codec_id_t id, size_t vsz, const terse_codec_params_t *p,
                                     const float *u, const float *e_in, float *e_out, size_t n, void *out,
                                     size_t *len, terse_rng_t *rng)
{
    if (n > UINT32_MAX)
        return TERSE_ERR_INVALID_ARG;
    if (e_out && !e_in) { /* feedback without a residual yet: p = u */
        memcpy(e_out, u, n * sizeof(float));
        u = e_out;
    }
    const float *x = e_out ? e_out : u;
    size_t k = topk_k(p, n);
    terse__codec_put_hdr(out, id, n);
    unsigned char *q = (unsigned char *)out + TERSE_CODEC_HDR;
    uint32_t k32 = (uint32_t)k;
    memcpy(q, &k32, 4);
    unsigned char *pairs = q + 4;
    uint32_t *idx = malloc((k ? k : 1) * sizeof(uint32_t));
    if (!idx)
        return TERSE_ERR_NO_MEMORY;
    /* same indices as the exact selection */
    terse_status_t st = terse__topk_fused(u, e_out && e_in && u != e_out ? e_in : NULL, e_out, n, k, idx);
    for (size_t j = 0; st == TERSE_OK && j < k; j++) {
        unsigned char *e = pairs + (4 + vsz) * j;
        memcpy(e, &idx[j], 4);
        float v = x[idx[j]];
        if (vsz == 4)
            memcpy(e + 4, &v, 4);
        else
            e[4] = terse__cnat8_quantize(v, (uint32_t)(terse__rng_next(rng) >> 41));
        if (e_out) /* -(-x + decoded): the generic path's exact subtraction */
            e_out[idx[j]] = -(-v + (vsz == 4 ? v : terse__cnat8_value(e[4])));
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
    return topk_encode_as(TERSE_CODEC_TOPK, 4, p, x, NULL, NULL, n, out, len, rng);
}
static terse_status_t topk_encode_ef(const terse_codec_params_t *p, const float *u, const float *e_in, float *e_out,
                                     size_t n, void *out, size_t *len, terse_rng_t *rng)
{
    return topk_encode_as(TERSE_CODEC_TOPK, 4, p, u, e_in, e_out, n, out, len, rng);
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
    return topk_encode_as(TERSE_CODEC_TOPK_CNAT, 1, p, x, NULL, NULL, n, out, len, rng);
}
static terse_status_t topkc_encode_ef(const terse_codec_params_t *p, const float *u, const float *e_in,
                                      float *e_out, size_t n, void *out, size_t *len, terse_rng_t *rng)
{
    return topk_encode_as(TERSE_CODEC_TOPK_CNAT, 1, p, u, e_in, e_out, n, out, len, rng);
}
static terse_status_t topkc_decode_add(const terse_codec_params_t *p, const void *code, size_t len,
                                       float *acc, size_t n)
{
    (void)p;
    return topk_decode_as(TERSE_CODEC_TOPK_CNAT, 1, code, len, acc, n);
}

const terse_codec_ops_t terse_codec_topk = {TERSE_CODEC_TOPK, "topk", 0, topk_bound, topk_encode,
                                            topk_decode_add, 1, 0, topk_encode_ef, NULL};
const terse_codec_ops_t terse_codec_topk_cnat = {TERSE_CODEC_TOPK_CNAT, "topk+cnat8", 1, topkc_bound,
                                                 topkc_encode, topkc_decode_add, 1, 0, topkc_encode_ef, NULL};
