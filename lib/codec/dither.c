/*
 * dither.c - random dithering of x / ||x||_p per bucket, two level sets:
 *  - "natdither" natural dithering: levels 0, 2^(1-s), ..., 1/2, 1; a value
 *    between two powers of two rounds up with probability equal to its
 *    mantissa (C_nat of the normalised value), below 2^(1-s) linearly
 *    between 0 and 2^(1-s). omega = 1/8 + d^(1/r) 2^(1-s) min(1, d^(1/r) 2^(1-s)).
 *  - "qsgd" standard random dithering: levels 0, 1/s, ..., 1 (the baseline).
 * Both unbiased. Code: header, one float norm per bucket, then per value a
 * sign bit and the level index (1 + ceil(log2(s+1)) bits, packed).
 */
#include "codec.h"

#include <math.h>
#include <string.h>

static unsigned level_bits(int s)
{
    unsigned b = 0;
    while ((1u << b) < (unsigned)s + 1)
        b++;
    return 1 + b;
}

static size_t bucket_of(const terse_codec_params_t *p)
{
    return p->bucket ? p->bucket : 512;
}

static int levels_of(const terse_codec_params_t *p)
{
    return p->levels >= 1 && p->levels <= 30 ? p->levels : 8;
}

static size_t dither_bound(const terse_codec_params_t *p, size_t n)
{
    size_t nb = (n + bucket_of(p) - 1) / bucket_of(p);
    return TERSE_CODEC_HDR + 4 * nb + (n * level_bits(levels_of(p)) + 7) / 8;
}

static float bucket_norm(const float *x, size_t n, int p)
{
    double s = 0;
    if (p == 0) {
        for (size_t i = 0; i < n; i++)
            s = fmax(s, fabs((double)x[i]));
        return (float)s;
    }
    for (size_t i = 0; i < n; i++)
        s += p == 1 ? fabs((double)x[i]) : (double)x[i] * x[i];
    /* round the norm up so that |x| / norm never exceeds 1 */
    float f = (float)(p == 1 ? s : sqrt(s));
    return f > 0 ? nextafterf(f, INFINITY) : f;
}

/* Level index for y in [0, 1]; r23 uniform 23 bits. Between two powers of
 * two y rounds up with probability equal to its mantissa (as C_nat), below
 * the lowest level 2^(1-s) linearly between 0 and it. */
static inline uint32_t nat_level(float y, int s, uint32_t r23)
{
    uint32_t u;
    memcpy(&u, &y, 4);
    int e = (int)(u >> 23) - 127; /* y = 2^e (1 + m) */
    if (u == 0)
        return 0;
    if (e < 1 - s) /* y / 2^(1-s) < 1: up with that probability */
        return (float)r23 * 0x1p-23f < ldexpf(y, s - 1) ? 1 : 0;
    uint32_t k = (uint32_t)(e + s);
    return k + ((r23 < (u & 0x7fffffu)) && k < (uint32_t)s ? 1 : 0);
}

static inline uint32_t uni_level(float y, int s, uint32_t r23)
{
    float t = y * (float)s;
    float f = floorf(t);
    uint32_t k = (uint32_t)f + ((float)r23 * 0x1p-23f < t - f ? 1 : 0);
    return k > (uint32_t)s ? (uint32_t)s : k;
}

static float level_value(int natural, uint32_t k, int s)
{
    if (k == 0)
        return 0;
    return natural ? ldexpf(1.0f, (int)k - s) : (float)k / (float)s;
}

static terse_status_t dither_encode(int natural, terse_codec_id_t id, const terse_codec_params_t *p,
                                    const float *x, size_t n, void *out, size_t *len, terse_rng_t *rng)
{
    if (terse__codec_nonfinite(x, n))
        return TERSE_ERR_INVALID_ARG;
    size_t bsz = bucket_of(p), nb = (n + bsz - 1) / bsz, total = dither_bound(p, n);
    unsigned w = level_bits(levels_of(p));
    memset(out, 0, total);
    terse__codec_put_hdr(out, id, n);
    uint8_t *q = (uint8_t *)out + TERSE_CODEC_HDR;
    terse_bitw_t bw = {q + 4 * nb, 0, 0};
    int s = levels_of(p);
    uint64_t key = terse__rng_next(rng); /* per-value bits: terse__hash32 as in cnat8 */
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * bsz, m = n - lo < bsz ? n - lo : bsz;
        float norm = bucket_norm(x + lo, m, p->norm);
        if (!isfinite(norm))
            return TERSE_ERR_INVALID_ARG; /* the bucket's norm overflows float */
        memcpy(q + 4 * b, &norm, 4);
        float inv = norm > 0 ? 1.0f / norm : 0;
        for (size_t i = lo; i < lo + m; i++) {
            float y = fabsf(x[i]) * inv;
            uint32_t r = (terse__hash32((uint32_t)i + (uint32_t)key) ^ (uint32_t)(key >> 32)) >> 9;
            if (y > 1)
                y = 1;
            uint32_t k = natural ? nat_level(y, s, r) : uni_level(y, s, r);
            terse__bitw_put(&bw, (k << 1) | (k && x[i] < 0 ? 1u : 0u), w);
        }
    }
    terse__bitw_flush(&bw);
    *len = total;
    return TERSE_OK;
}

static terse_status_t dither_decode_add(int natural, terse_codec_id_t id, const terse_codec_params_t *p,
                                        const void *code, size_t len, float *acc, size_t n)
{
    if (terse__codec_check_hdr(code, len, id, n) || len != dither_bound(p, n))
        return TERSE_ERR_PROTOCOL;
    size_t bsz = bucket_of(p), nb = (n + bsz - 1) / bsz;
    unsigned w = level_bits(levels_of(p));
    const uint8_t *q = (const uint8_t *)code + TERSE_CODEC_HDR, *bits = q + 4 * nb;
    for (size_t b = 0; b < nb; b++) {
        float norm;
        memcpy(&norm, q + 4 * b, 4);
        if (!isfinite(norm) || norm < 0)
            return TERSE_ERR_PROTOCOL;
    }
    int s = levels_of(p);
    terse_bitr_t br = {bits, (const uint8_t *)code + len, 0, 0};
    for (size_t i = 0; i < n; i++)
        if ((terse__bitr_get(&br, w) >> 1) > (uint32_t)s)
            return TERSE_ERR_PROTOCOL;
    float lv[32];
    for (int k = 0; k <= s; k++)
        lv[k] = level_value(natural, (uint32_t)k, s);
    br = (terse_bitr_t){bits, (const uint8_t *)code + len, 0, 0};
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * bsz, m = n - lo < bsz ? n - lo : bsz;
        float norm;
        memcpy(&norm, q + 4 * b, 4);
        for (size_t i = lo; i < lo + m; i++) {
            uint32_t f = terse__bitr_get(&br, w);
            float v = norm * lv[f >> 1];
            acc[i] += (f & 1) ? -v : v;
        }
    }
    return TERSE_OK;
}

static terse_status_t nat_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                 size_t *len, terse_rng_t *rng)
{
    return dither_encode(1, TERSE_CODEC_NATDITHER, p, x, n, out, len, rng);
}
static terse_status_t nat_decode_add(const terse_codec_params_t *p, const void *code, size_t len,
                                     float *acc, size_t n)
{
    return dither_decode_add(1, TERSE_CODEC_NATDITHER, p, code, len, acc, n);
}
static terse_status_t qsgd_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    return dither_encode(0, TERSE_CODEC_QSGD, p, x, n, out, len, rng);
}
static terse_status_t qsgd_decode_add(const terse_codec_params_t *p, const void *code, size_t len,
                                      float *acc, size_t n)
{
    return dither_decode_add(0, TERSE_CODEC_QSGD, p, code, len, acc, n);
}

const terse_codec_ops_t terse_codec_natdither = {TERSE_CODEC_NATDITHER, "natdither", 1, dither_bound,
                                                 nat_encode, nat_decode_add, 0, 0, NULL, NULL};
const terse_codec_ops_t terse_codec_qsgd = {TERSE_CODEC_QSGD, "qsgd", 1, dither_bound, qsgd_encode,
                                            qsgd_decode_add, 0, 0, NULL, NULL};
