/*
 * half.c - the two 16-bit float codecs, fp16 and bf16: round to nearest even,
 * deterministic. They differ only in the conversion (and fp16 saturates at
 * its largest finite value, 65504; bf16 has float32's range).
 */
#include "codec.h"
#include "../dtype.h"

static size_t half_bound(const terse_codec_params_t *p, size_t n)
{
    (void)p;
    return TERSE_CODEC_HDR + 2 * n;
}

#define BLK 512

static terse_status_t half_encode(terse_codec_id_t id, const float *x, size_t n, void *out, size_t *len)
{
    if (terse__codec_nonfinite(x, n))
        return TERSE_ERR_INVALID_ARG;
    terse__codec_put_hdr(out, id, n);
    uint16_t *h = (uint16_t *)((char *)out + TERSE_CODEC_HDR);
    if (id == TERSE_CODEC_FP16) {
        float c[BLK]; /* saturate at fp16's largest finite value first */
        for (size_t o = 0; o < n; o += BLK) {
            size_t m = n - o < BLK ? n - o : BLK;
            for (size_t i = 0; i < m; i++)
                c[i] = x[o + i] > 65504.0f ? 65504.0f : x[o + i] < -65504.0f ? -65504.0f : x[o + i];
            terse__float_to_half_n(h + o, c, m);
        }
    } else {
        terse__float_to_bf16_n(h, x, n);
    }
    *len = TERSE_CODEC_HDR + 2 * n;
    return TERSE_OK;
}

static terse_status_t half_decode_add(terse_codec_id_t id, const void *code, size_t len, float *acc, size_t n)
{
    if (terse__codec_check_hdr(code, len, id, n) || len != TERSE_CODEC_HDR + 2 * n)
        return TERSE_ERR_PROTOCOL;
    const uint16_t *h = (const uint16_t *)((const char *)code + TERSE_CODEC_HDR);
    float f[BLK];
    for (size_t o = 0; o < n; o += BLK) {
        size_t m = n - o < BLK ? n - o : BLK;
        (id == TERSE_CODEC_FP16 ? terse__half_to_float_n : terse__bf16_to_float_n)(f, h + o, m);
        for (size_t i = 0; i < m; i++)
            acc[o + i] += f[i];
    }
    return TERSE_OK;
}

static terse_status_t fp16_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    (void)p, (void)rng;
    return half_encode(TERSE_CODEC_FP16, x, n, out, len);
}

static terse_status_t fp16_decode_add(const terse_codec_params_t *p, const void *code, size_t len, float *acc,
                                      size_t n)
{
    (void)p;
    return half_decode_add(TERSE_CODEC_FP16, code, len, acc, n);
}

static terse_status_t bf16_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    (void)p, (void)rng;
    return half_encode(TERSE_CODEC_BF16, x, n, out, len);
}

static terse_status_t bf16_decode_add(const terse_codec_params_t *p, const void *code, size_t len, float *acc,
                                      size_t n)
{
    (void)p;
    return half_decode_add(TERSE_CODEC_BF16, code, len, acc, n);
}

const terse_codec_ops_t terse_codec_fp16 = {TERSE_CODEC_FP16, "fp16", 0, half_bound, fp16_encode, fp16_decode_add, 0, 0, NULL, NULL};
const terse_codec_ops_t terse_codec_bf16 = {TERSE_CODEC_BF16, "bf16", 0, half_bound, bf16_encode, bf16_decode_add, 0, 0, NULL, NULL};
