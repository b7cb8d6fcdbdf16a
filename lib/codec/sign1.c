/*
 * sign1.c - unbiased stochastic 1-bit: per bucket R = max |x|; each value is
 * sent as +R with probability (1 + x/R) / 2, else -R. E[decode] = x, variance
 * R^2 - x^2 per value. Code: header, one float R per bucket, 1 bit per value
 * (set = negative).
 */
#include "codec.h"

#include <math.h>
#include <string.h>

static size_t bucket_of(const terse_codec_params_t *p)
{
    return p->bucket ? p->bucket : 512;
}

static size_t sign1_bound(const terse_codec_params_t *p, size_t n)
{
    return TERSE_CODEC_HDR + 4 * ((n + bucket_of(p) - 1) / bucket_of(p)) + (n + 7) / 8;
}

/* A chunk (a multiple of 8 values) at a time: the -R flags by a loop that
 * vectorises, then packed 8 to a byte. Value i's uniform: 23 bits of
 * terse__hash32(i + key) ^ (key >> 32). */
#define CHUNK TERSE_CODEC_CHUNK

static inline __attribute__((always_inline)) void sign1_chunk(const float *restrict x, size_t lo, size_t m,
                                                              float rmax, uint64_t key, uint8_t *restrict neg)
{
    const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (size_t j = 0; j < m; j++) {
        int32_t r = (int32_t)((terse__hash32((uint32_t)(lo + j) + k0) ^ k1) >> 9);
        float pplus = 0.5f + 0.5f * (x[lo + j] / rmax);
        neg[j] = (uint8_t)!((float)r * 0x1p-23f < pplus);
    }
}

TERSE_CLONES
static void sign1_flags(const float *x, size_t lo, size_t m, float rmax, uint64_t key, uint8_t *neg)
{
    sign1_chunk(x, lo, m, rmax, key, neg);
}

static terse_status_t sign1_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                   size_t *len, terse_rng_t *rng)
{
    if (terse__codec_nonfinite(x, n))
        return TERSE_ERR_INVALID_ARG;
    size_t bsz = bucket_of(p), nb = (n + bsz - 1) / bsz;
    terse__codec_put_hdr(out, TERSE_CODEC_SIGN1, n);
    uint8_t *q = (uint8_t *)out + TERSE_CODEC_HDR, *bits = q + 4 * nb;
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * bsz, m = n - lo < bsz ? n - lo : bsz;
        float rmax = 0;
        for (size_t i = lo; i < lo + m; i++) {
            float a = fabsf(x[i]);
            rmax = a > rmax ? a : rmax; /* no NaN here: refused above */
        }
        memcpy(q + 4 * b, &rmax, 4);
    }
    uint64_t key = terse__rng_next(rng);
    uint8_t neg[CHUNK];
    for (size_t c0 = 0; c0 < n; c0 += CHUNK) {
        size_t c1 = n - c0 < CHUNK ? n : c0 + CHUNK;
        for (size_t lo = c0; lo < c1;) {
            size_t b = lo / bsz, hi = terse__bucket_span_end(lo, c1, bsz);
            float rmax = terse__codec_f32_at(q, b);
            if (rmax > 0)
                sign1_flags(x, lo, hi - lo, rmax, key, neg + (lo - c0));
            else /* an all-zero bucket sends +0 */
                memset(neg + (lo - c0), 0, hi - lo);
            lo = hi;
        }
        for (size_t g = 0; g < c1 - c0; g += 8) {
            size_t m = c1 - c0 - g < 8 ? c1 - c0 - g : 8;
            uint8_t byte = 0;
            for (size_t j = 0; j < m; j++)
                byte |= (uint8_t)(neg[g + j] << j);
            bits[(c0 + g) / 8] = byte;
        }
    }
    *len = sign1_bound(p, n);
    return TERSE_OK;
}

static terse_status_t sign1_decode_add(const terse_codec_params_t *p, const void *code, size_t len,
                                       float *acc, size_t n)
{
    if (terse__codec_check_hdr(code, len, TERSE_CODEC_SIGN1, n) || len != sign1_bound(p, n))
        return TERSE_ERR_PROTOCOL;
    size_t bsz = bucket_of(p), nb = (n + bsz - 1) / bsz;
    const uint8_t *q = (const uint8_t *)code + TERSE_CODEC_HDR, *bits = q + 4 * nb;
    for (size_t b = 0; b < nb; b++) {
        float r;
        memcpy(&r, q + 4 * b, 4);
        if (!isfinite(r) || r < 0)
            return TERSE_ERR_PROTOCOL;
    }
    uint8_t neg[CHUNK];
    for (size_t c0 = 0; c0 < n; c0 += CHUNK) {
        size_t c1 = n - c0 < CHUNK ? n : c0 + CHUNK;
        for (size_t i = c0; i < c1; i++) /* bits to bytes first: the adds then vectorise */
            neg[i - c0] = (bits[i / 8] >> (i % 8)) & 1;
        for (size_t lo = c0; lo < c1;) {
            size_t b = lo / bsz, hi = terse__bucket_span_end(lo, c1, bsz);
            float r = terse__codec_f32_at(q, b);
            for (size_t i = lo; i < hi; i++)
                acc[i] += neg[i - c0] ? -r : r;
            lo = hi;
        }
    }
    return TERSE_OK;
}

const terse_codec_ops_t terse_codec_sign1 = {TERSE_CODEC_SIGN1, "sign1", 1, sign1_bound, sign1_encode,
                                             sign1_decode_add, 0, 0, NULL, NULL};
