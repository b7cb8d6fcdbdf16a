/* bf16.c - bfloat16, round to nearest even (deterministic); float32's range. */
#include "codec.h"
#include "../dtype.h"

static size_t bf16_bound(const terse_codec_params_t *p, size_t n)
{
    (void)p;
    return TERSE_CODEC_HDR + 2 * n;
}

static terse_status_t bf16_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    (void)p, (void)rng;
    if (terse__codec_nonfinite(x, n))
        return TERSE_ERR_INVALID_ARG;
    terse__codec_put_hdr(out, TERSE_CODEC_BF16, n);
    uint16_t *h = (uint16_t *)((char *)out + TERSE_CODEC_HDR);
    for (size_t i = 0; i < n; i++)
        h[i] = terse__float_to_bf16(x[i]);
    *len = TERSE_CODEC_HDR + 2 * n;
    return TERSE_OK;
}

static terse_status_t bf16_decode_add(const terse_codec_params_t *p, const void *code, size_t len, float *acc,
                                      size_t n)
{
    (void)p;
    if (terse__codec_check_hdr(code, len, TERSE_CODEC_BF16, n) || len != TERSE_CODEC_HDR + 2 * n)
        return TERSE_ERR_PROTOCOL;
    const uint16_t *h = (const uint16_t *)((const char *)code + TERSE_CODEC_HDR);
    for (size_t i = 0; i < n; i++)
        acc[i] += terse__bf16_to_float(h[i]);
    return TERSE_OK;
}

const terse_codec_ops_t terse_codec_bf16 = {TERSE_CODEC_BF16, "bf16", 0, bf16_bound, bf16_encode, bf16_decode_add};
