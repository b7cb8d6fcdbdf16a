/*
 * cnat.c - natural compression C_nat (Horvath et al.), one byte per value:
 * bit 7 sign, bits 0-6 code = E - 17 for the float32 biased exponent
 * E in [18, 144], code 0 = zero (the authors' RDMA format). |t| = 2^a (1 + m)
 * rounds up to 2^(a+1) with probability m, else down to 2^a: unbiased, with
 * relative variance m(1-m)/(1+m)^2 <= 1/8. Below 2^-109 a value rounds to 0
 * or 2^-109, unbiased; at or above 2^17 it saturates to 2^17 (biased: gradients
 * that large mean the scale is wrong, not that bits are short).
 */
#include "codec.h"

#include <string.h>

#define E_MIN 18  /* code 1 */
#define E_MAX 144 /* code 127 */

static size_t cnat_bound(const terse_codec_params_t *p, size_t n)
{
    (void)p;
    return TERSE_CODEC_HDR + n;
}

static terse_status_t cnat_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    (void)p;
    if (terse__codec_nonfinite(x, n))
        return TERSE_ERR_INVALID_ARG;
    terse__codec_put_hdr(out, TERSE_CODEC_CNAT8, n);
    uint8_t *c = (uint8_t *)out + TERSE_CODEC_HDR;
    const float min_val = 0x1p-109f; /* 2^(E_MIN - 127) */
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        uint8_t sign = (uint8_t)((u >> 24) & 0x80);
        uint32_t a = u & 0x7fffffffu, e = a >> 23, m = a & 0x7fffffu;
        uint32_t r = (uint32_t)(terse__rng_next(rng) >> 41); /* 23 random bits */
        uint8_t code;
        if (a == 0) {
            code = 0;
        } else if (e < E_MIN) {
            /* below the smallest code: 0 or 2^-109 with the right mean */
            float v;
            memcpy(&v, &a, 4);
            double pr = (double)v / (double)min_val;
            code = ((double)r / 8388608.0) < pr ? 1 : 0;
        } else {
            if (r < m)
                e++; /* round up with probability m */
            code = e > E_MAX ? (uint8_t)(E_MAX - 17) : (uint8_t)(e - 17);
        }
        c[i] = code ? (uint8_t)(sign | code) : 0;
    }
    *len = TERSE_CODEC_HDR + n;
    return TERSE_OK;
}

static terse_status_t cnat_decode_add(const terse_codec_params_t *p, const void *code, size_t len, float *acc,
                                      size_t n)
{
    (void)p;
    if (terse__codec_check_hdr(code, len, TERSE_CODEC_CNAT8, n) || len != TERSE_CODEC_HDR + n)
        return TERSE_ERR_PROTOCOL;
    const uint8_t *c = (const uint8_t *)code + TERSE_CODEC_HDR;
    for (size_t i = 0; i < n; i++) {
        uint32_t k = c[i] & 0x7f;
        /* a value is sign | (k + 17) << 23 (mantissa zero), or zero */
        uint32_t u = k ? ((uint32_t)(c[i] & 0x80) << 24) | ((k + 17) << 23) : 0;
        float v;
        memcpy(&v, &u, 4);
        acc[i] += v;
    }
    return TERSE_OK;
}

const terse_codec_ops_t terse_codec_cnat8 = {TERSE_CODEC_CNAT8, "cnat8", 1, cnat_bound, cnat_encode,
                                             cnat_decode_add};
