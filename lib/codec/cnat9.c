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

static terse_status_t cnat9_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                   size_t *len, terse_rng_t *rng)
{
    if (terse__codec_nonfinite(x, n))
        return TERSE_ERR_INVALID_ARG;
    terse__codec_put_hdr(out, TERSE_CODEC_CNAT9, n);
    uint8_t *q = (uint8_t *)out + TERSE_CODEC_HDR;
    for (size_t g = 0; g < n; g += 8) {
        uint8_t *signs = q + (g / 8) * 9, *ex = signs + 1;
        size_t m = n - g < 8 ? n - g : 8;
        uint8_t sb = 0;
        memset(ex, 0, 8);
        for (size_t j = 0; j < m; j++) {
            uint32_t u;
            memcpy(&u, &x[g + j], 4);
            uint32_t a = u & 0x7fffffffu;
            uint32_t r = (uint32_t)(terse__rng_next(rng) >> 41);
            uint32_t e;
            if (a == 0)
                e = 0;
            else if (a < 0x00800000u) /* subnormal a * 2^-149: 2^-126 with probability a / 2^23 */
                e = r < a ? 1 : 0;
            else
                e = terse__cnat_round(a, r) >> 23;
            if (e > 254)
                e = 254;
            ex[j] = (uint8_t)e;
            if (e)
                sb |= (uint8_t)((u >> 31) << j);
        }
        signs[0] = sb;
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
