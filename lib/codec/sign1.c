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

static terse_status_t sign1_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                   size_t *len, terse_rng_t *rng)
{
    if (terse__codec_nonfinite(x, n))
        return TERSE_ERR_INVALID_ARG;
    size_t bsz = bucket_of(p), nb = (n + bsz - 1) / bsz;
    memset(out, 0, sign1_bound(p, n));
    terse__codec_put_hdr(out, TERSE_CODEC_SIGN1, n);
    uint8_t *q = (uint8_t *)out + TERSE_CODEC_HDR, *bits = q + 4 * nb;
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * bsz, m = n - lo < bsz ? n - lo : bsz;
        float rmax = 0;
        for (size_t i = lo; i < lo + m; i++)
            rmax = fmaxf(rmax, fabsf(x[i]));
        memcpy(q + 4 * b, &rmax, 4);
        if (rmax == 0)
            continue;
        for (size_t i = lo; i < lo + m; i++) {
            float pplus = 0.5f + 0.5f * (x[i] / rmax);
            if (!(terse__rng_unit(rng) < pplus))
                bits[i / 8] |= (uint8_t)(1u << (i % 8));
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
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * bsz, m = n - lo < bsz ? n - lo : bsz;
        float r;
        memcpy(&r, q + 4 * b, 4);
        for (size_t i = lo; i < lo + m; i++)
            acc[i] += (bits[i / 8] >> (i % 8)) & 1 ? -r : r;
    }
    return TERSE_OK;
}

const terse_codec_ops_t terse_codec_sign1 = {TERSE_CODEC_SIGN1, "sign1", 1, sign1_bound, sign1_encode,
                                             sign1_decode_add, 0, 0, NULL, NULL};
