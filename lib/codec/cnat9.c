/*
 * cnat9.c - natural compression with the full float32 exponent: 9 bits per
 * value, stored per group of 8 values as one byte of signs and 8 exponent
 * bytes (E = 0 means zero). No clipping at the small end: subnormals round
 * to 0 or 2^-126 with the right mean; values at or above 2^127 that would
 * round up to 2^128 saturate at 2^127.
 */
#include "codec.h"

#include <string.h>

static size_t cnat9_bound(const terse_codec_params_t *p, size_t n)
{
    (void)p;
    return TERSE_CODEC_HDR + n + (n + 7) / 8;
}

/* Values go a chunk at a time (a multiple of 8): exponent bytes and sign
 * flags by a branch-free loop that vectorises, then the groups. Value i's
 * random bits: terse__hash32(i + key) ^ (key >> 32), 23 of them. */
#define CHUNK TERSE_CODEC_CHUNK

/* E of |x| rounded up with probability equal to its mantissa: for a normal
 * value that is its exponent (+1), for a subnormal a * 2^-149 it is 1
 * (2^-126) with probability a / 2^23, the same formula. */
static inline __attribute__((always_inline)) void cnat9_chunk(const float *restrict x, size_t lo, size_t m,
                                                              uint64_t key, uint8_t *restrict ex,
                                                              uint8_t *restrict neg)
{
    const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (size_t j = 0; j < m; j++) {
        int32_t u;
        memcpy(&u, &x[lo + j], 4);
        int32_t a = u & 0x7fffffff;
        int32_t r = (int32_t)((terse__hash32((uint32_t)(lo + j) + k0) ^ k1) >> 9);
        int32_t e = (a >> 23) + (r < (a & 0x7fffff));
        e = e > 254 ? 254 : e; /* 2^128 would be infinity: saturate */
        ex[j] = (uint8_t)e;
        neg[j] = (uint8_t)((e != 0) & (u < 0));
    }
}

TERSE_CLONES
static void cnat9_codes(const float *x, size_t lo, size_t m, uint64_t key, uint8_t *ex, uint8_t *neg)
{
    cnat9_chunk(x, lo, m, key, ex, neg);
}

static terse_status_t cnat9_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                   size_t *len, terse_rng_t *rng)
{
    if (terse__codec_nonfinite(x, n))
        return TERSE_ERR_INVALID_ARG;
    terse__codec_put_hdr(out, TERSE_CODEC_CNAT9, n);
    uint8_t *q = (uint8_t *)out + TERSE_CODEC_HDR;
    uint64_t key = terse__rng_next(rng);
    uint8_t ex[CHUNK], neg[CHUNK];
    for (size_t c0 = 0; c0 < n; c0 += CHUNK) {
        size_t cm = n - c0 < CHUNK ? n - c0 : CHUNK;
        cnat9_codes(x, c0, cm, key, ex, neg);
        for (size_t g = 0; g < cm; g += 8) {
            uint8_t *grp = q + (c0 + g) / 8 * 9;
            size_t m = cm - g < 8 ? cm - g : 8; /* the last group may be short, and so is its room */
            uint8_t sb = 0;
            for (size_t j = 0; j < m; j++)
                sb |= (uint8_t)(neg[g + j] << j);
            grp[0] = sb;
            memcpy(grp + 1, ex + g, m);
        }
    }
    *len = cnat9_bound(p, n);
    return TERSE_OK;
}

static terse_status_t cnat9_decode_add(const terse_codec_params_t *p, const void *code, size_t len,
                                       float *acc, size_t n)
{
    if (terse__codec_check_hdr(code, len, TERSE_CODEC_CNAT9, n) || len != cnat9_bound(p, n))
        return TERSE_ERR_PROTOCOL;
    const uint8_t *q = (const uint8_t *)code + TERSE_CODEC_HDR;
    for (size_t g = 0; g < n; g += 8) {
        const uint8_t *signs = q + (g / 8) * 9, *ex = signs + 1;
        size_t m = n - g < 8 ? n - g : 8;
        for (size_t j = 0; j < m; j++)
            if (ex[j] == 255)
                return TERSE_ERR_PROTOCOL; /* never produced: would be infinity */
    }
    for (size_t g = 0; g < n; g += 8) {
        const uint8_t *signs = q + (g / 8) * 9, *ex = signs + 1;
        size_t m = n - g < 8 ? n - g : 8;
        for (size_t j = 0; j < m; j++) {
            uint32_t u = ((uint32_t)((signs[0] >> j) & 1u) << 31) | ((uint32_t)ex[j] << 23);
            float v;
            memcpy(&v, &u, 4);
            acc[g + j] += ex[j] ? v : 0.0f;
        }
    }
    return TERSE_OK;
}

const terse_codec_ops_t terse_codec_cnat9 = {TERSE_CODEC_CNAT9, "cnat9", 1, cnat9_bound, cnat9_encode,
                                             cnat9_decode_add, 0, 0, NULL, NULL};
