/*
 * sign.c - scaled sign (1 bit per value and one scale): decode(x)_i =
 * sign(x_i) * ||x||_1 / n, with sign(0) = +1. Deterministic and biased: it is
 * meant to run under error feedback.
 */
#include "codec.h"

#include <math.h>
#include <string.h>

static size_t sign_bound(const terse_codec_params_t *p, size_t n)
{
    (void)p;
    return TERSE_CODEC_HDR + 4 + (n + 7) / 8;
}

static terse_status_t sign_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    (void)p, (void)rng;
    if (terse__codec_nonfinite(x, n))
        return TERSE_ERR_INVALID_ARG;
    terse__codec_put_hdr(out, TERSE_CODEC_SIGN, n);
    double l1 = 0;
    for (size_t i = 0; i < n; i++)
        l1 += fabs((double)x[i]);
    float scale = n ? (float)(l1 / (double)n) : 0.0f;
    unsigned char *q = (unsigned char *)out + TERSE_CODEC_HDR;
    memcpy(q, &scale, 4);
    unsigned char *bits = q + 4;
    memset(bits, 0, (n + 7) / 8);
    for (size_t i = 0; i < n; i++)
        if (x[i] < 0)
            bits[i / 8] |= (unsigned char)(1u << (i % 8));
    *len = sign_bound(p, n);
    return TERSE_OK;
}

static terse_status_t sign_decode_add(const terse_codec_params_t *p, const void *code, size_t len, float *acc,
                                      size_t n)
{
    if (terse__codec_check_hdr(code, len, TERSE_CODEC_SIGN, n) || len != sign_bound(p, n))
        return TERSE_ERR_PROTOCOL;
    const unsigned char *q = (const unsigned char *)code + TERSE_CODEC_HDR;
    float scale;
    memcpy(&scale, q, 4);
    if (!isfinite(scale) || scale < 0)
        return TERSE_ERR_PROTOCOL;
    const unsigned char *bits = q + 4;
    for (size_t i = 0; i < n; i++)
        acc[i] += (bits[i / 8] >> (i % 8)) & 1 ? -scale : scale;
    return TERSE_OK;
}

const terse_codec_ops_t terse_codec_sign = {TERSE_CODEC_SIGN, "sign", 0, sign_bound, sign_encode, sign_decode_add, 1, 0};
