/*
 * identity.c - "fp32": the values as they are. The reference point of every
 * compressed collective (with it, a compressed allreduce is a dense one) and
 * the full-precision downlink when only the uplink should be compressed.
 */
#include "codec.h"

#include <string.h>

static size_t fp32_bound(const terse_codec_params_t *p, size_t n)
{
    (void)p;
    return TERSE_CODEC_HDR + 4 * n;
}

static terse_status_t fp32_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    (void)p, (void)rng;
    if (terse__codec_nonfinite(x, n))
        return TERSE_ERR_INVALID_ARG;
    terse__codec_put_hdr(out, TERSE_CODEC_FP32, n);
    memcpy((char *)out + TERSE_CODEC_HDR, x, 4 * n);
    *len = TERSE_CODEC_HDR + 4 * n;
    return TERSE_OK;
}

static terse_status_t fp32_decode_add(const terse_codec_params_t *p, const void *code, size_t len,
                                      float *acc, size_t n)
{
    (void)p;
    if (terse__codec_check_hdr(code, len, TERSE_CODEC_FP32, n) || len != TERSE_CODEC_HDR + 4 * n)
        return TERSE_ERR_PROTOCOL;
    const float *v = (const float *)((const char *)code + TERSE_CODEC_HDR);
    for (size_t i = 0; i < n; i++)
        if (!(v[i] - v[i] == 0.0f)) /* NaN or infinity: never a valid code */
            return TERSE_ERR_PROTOCOL;
    for (size_t i = 0; i < n; i++)
        acc[i] += v[i];
    return TERSE_OK;
}

const terse_codec_ops_t terse_codec_fp32 = {TERSE_CODEC_FP32, "fp32", 0, fp32_bound, fp32_encode,
                                            fp32_decode_add, 0, 0, NULL, NULL};
