/*
 * randk.c - random-k: k = max(1, floor(ratio n)) distinct indices drawn
 * uniformly (Floyd's algorithm) from a seed shared by all ranks, values
 * scaled by n/k so the code is unbiased. The indices are not sent: the code
 * carries the 8-byte seed and the decoder draws them again. Every rank of a
 * step uses the same seed, so all codes of a step cover the same positions.
 * "randk+cnat8" sends each scaled value as its 1-byte C_nat code.
 */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

static size_t randk_k(const terse_codec_params_t *p, size_t n)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)((p->ratio > 0 ? p->ratio : 0.01) * (double)n);
    return k < 1 ? 1 : k > n ? n : k;
}

static size_t randk_bound(const terse_codec_params_t *p, size_t n)
{
    return TERSE_CODEC_HDR + 8 + 4 * randk_k(p, n);
}

static size_t randkc_bound(const terse_codec_params_t *p, size_t n)
{
    return TERSE_CODEC_HDR + 8 + randk_k(p, n);
}

/* k distinct indices of [0, n), ascending, drawn from seed. */
static terse_status_t draw(uint64_t seed, size_t n, size_t k, uint32_t *idx)
{
    uint64_t *bitmap = calloc((n + 63) / 64 + 1, sizeof(uint64_t));
    if (!bitmap)
        return TERSE_ERR_NO_MEMORY;
    terse_rng_t r = {seed, 0};
    for (size_t j = n - k; j < n; j++) {
        size_t t = (size_t)(((unsigned __int128)terse__rng_next(&r) * (j + 1)) >> 64);
        if (bitmap[t / 64] >> (t % 64) & 1)
            t = j;
        bitmap[t / 64] |= 1ull << (t % 64);
    }
    size_t w = 0;
    for (size_t b = 0; b < (n + 63) / 64; b++)
        for (uint64_t m = bitmap[b]; m; m &= m - 1)
            idx[w++] = (uint32_t)(b * 64 + (size_t)__builtin_ctzll(m));
    free(bitmap);
    return TERSE_OK;
}

static terse_status_t randk_encode_as(terse_codec_id_t id, size_t vsz, const terse_codec_params_t *p,
                                      const float *x, size_t n, void *out, size_t *len, terse_rng_t *rng)
{
    if (terse__codec_nonfinite(x, n) || n > UINT32_MAX)
        return TERSE_ERR_INVALID_ARG;
    size_t k = randk_k(p, n);
    terse__codec_put_hdr(out, id, n);
    unsigned char *q = (unsigned char *)out + TERSE_CODEC_HDR;
    memcpy(q, &p->shared_seed, 8);
    uint32_t *idx = malloc((k ? k : 1) * sizeof(uint32_t));
    if (!idx)
        return TERSE_ERR_NO_MEMORY;
    terse_status_t st = draw(p->shared_seed, n, k, idx);
    float scale = p->no_rescale ? 1.0f : k ? (float)((double)n / (double)k) : 0;
    for (size_t j = 0; st == TERSE_OK && j < k; j++) {
        float v = x[idx[j]] * scale;
        if (vsz == 4)
            memcpy(q + 8 + 4 * j, &v, 4);
        else
            q[8 + j] = terse__cnat8_quantize(v, (uint32_t)(terse__rng_next(rng) >> 41));
    }
    free(idx);
    *len = TERSE_CODEC_HDR + 8 + vsz * k;
    return st;
}

static terse_status_t randk_decode_as(terse_codec_id_t id, size_t vsz, const terse_codec_params_t *p,
                                      const void *code, size_t len, float *acc, size_t n)
{
    size_t k = randk_k(p, n);
    if (terse__codec_check_hdr(code, len, id, n) || len != TERSE_CODEC_HDR + 8 + vsz * k)
        return TERSE_ERR_PROTOCOL;
    const unsigned char *q = (const unsigned char *)code + TERSE_CODEC_HDR;
    if (vsz == 4)
        for (size_t j = 0; j < k; j++) {
            float v;
            memcpy(&v, q + 8 + 4 * j, 4);
            if (!(v - v == 0.0f))
                return TERSE_ERR_PROTOCOL;
        }
    uint64_t seed;
    memcpy(&seed, q, 8);
    uint32_t *idx = malloc((k ? k : 1) * sizeof(uint32_t));
    if (!idx)
        return TERSE_ERR_NO_MEMORY;
    terse_status_t st = draw(seed, n, k, idx);
    for (size_t j = 0; st == TERSE_OK && j < k; j++) {
        float v;
        if (vsz == 4)
            memcpy(&v, q + 8 + 4 * j, 4);
        else
            v = terse__cnat8_value(q[8 + j]);
        acc[idx[j]] += v;
    }
    free(idx);
    return st;
}

static terse_status_t randk_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                   size_t *len, terse_rng_t *rng)
{
    return randk_encode_as(TERSE_CODEC_RANDK, 4, p, x, n, out, len, rng);
}
static terse_status_t randk_decode_add(const terse_codec_params_t *p, const void *code, size_t len,
                                       float *acc, size_t n)
{
    return randk_decode_as(TERSE_CODEC_RANDK, 4, p, code, len, acc, n);
}
static terse_status_t randkc_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                    size_t *len, terse_rng_t *rng)
{
    return randk_encode_as(TERSE_CODEC_RANDK_CNAT, 1, p, x, n, out, len, rng);
}
static terse_status_t randkc_decode_add(const terse_codec_params_t *p, const void *code, size_t len,
                                        float *acc, size_t n)
{
    return randk_decode_as(TERSE_CODEC_RANDK_CNAT, 1, p, code, len, acc, n);
}

const terse_codec_ops_t terse_codec_randk = {TERSE_CODEC_RANDK, "randk", 0, randk_bound, randk_encode,
                                             randk_decode_add, 0, 1, NULL, NULL};
const terse_codec_ops_t terse_codec_randk_cnat = {TERSE_CODEC_RANDK_CNAT, "randk+cnat8", 1, randkc_bound,
                                                  randkc_encode, randkc_decode_add, 0, 1, NULL, NULL};
