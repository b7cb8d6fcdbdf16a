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
    for (size_t i = 0; i < n; i++)
        c[i] = terse__cnat8_quantize(x[i], (uint32_t)(terse__rng_next(rng) >> 41));
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
    for (size_t i = 0; i < n; i++)
        acc[i] += terse__cnat8_value(c[i]);
    return TERSE_OK;
}

const terse_codec_ops_t terse_codec_cnat8 = {TERSE_CODEC_CNAT8, "cnat8", 1, cnat_bound, cnat_encode,
                                             cnat_decode_add, 0, 0};
