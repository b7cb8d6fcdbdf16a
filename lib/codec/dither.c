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
    if (p == 0) {
        float m = 0;
        for (size_t i = 0; i < n; i++) {
            float a = fabsf(x[i]);
            m = a > m ? a : m; /* no NaN here: refused before */
        }
        return m;
    }
    /* eight partial sums in double, added in a fixed order: independent
     * chains the CPU overlaps, the same result on every run */
    double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            part[l] += p == 1 ? fabs((double)x[i + (size_t)l]) : (double)x[i + (size_t)l] * x[i + (size_t)l];
    for (; i < n; i++)
        part[i % 8] += p == 1 ? fabs((double)x[i]) : (double)x[i] * x[i];
    double s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    /* round the norm up so that |x| / norm never exceeds 1 */
    float f = (float)(p == 1 ? s : sqrt(s));
    return f > 0 ? nextafterf(f, INFINITY) : f;
}

/* Values go a chunk at a time: level codes (level << 1 | sign) into a byte
 * array by a branch-free loop the compiler vectorises, then packed 8 codes
 * (w <= 6 bits each) to w bytes - the same LSB-first bit stream as one
 * value at a time. A chunk starts at a multiple of 8 values; buckets may
 * split it. */
#define CHUNK TERSE_CODEC_CHUNK

/* Codes for x[lo, lo + m), one bucket's 1/norm. Natural: y in [2^e, 2^(e+1))
 * rounds up with probability equal to its mantissa (as C_nat), below the
 * lowest level 2^(1-s) linearly between 0 and it (y = 0 lands there, at 0).
 * Uniform: levels k/s. The random bits of value i: terse__hash32(i + key) ^
 * (key >> 32), 23 of them. Branch-free integer and float steps only (every
 * quantity fits int32), so it vectorises; exact operations, so every clone
 * gives the same bits. */
static inline __attribute__((always_inline)) void
dither_codes(int natural, int s, const float *restrict x, size_t lo, size_t m, float inv, uint64_t key,
             uint8_t *restrict out)
{
    const float lowscale = (float)(1u << (s - 1)); /* y / 2^(1-s) */
    const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (size_t j = 0; j < m; j++) {
        float xv = x[lo + j];
        /* y = min(|x| / norm, 1), clamped on the bits (y >= 0): a float
         * select here keeps GCC from vectorising */
        union { float f; int32_t i; } yb = {.f = fabsf(xv) * inv};
        int32_t u = yb.i < 0x3f800000 ? yb.i : 0x3f800000;
        yb.i = u;
        float y = yb.f;
        int32_t r = (int32_t)((terse__hash32((uint32_t)(lo + j) + k0) ^ k1) >> 9);
        float rf = (float)r * 0x1p-23f;
        int32_t k;
        if (natural) {
            int32_t e = (u >> 23) - 127, kb = e + s;
            int32_t khigh = kb + ((r < (u & 0x7fffff)) & (kb < s));
            int32_t klow = rf < y * lowscale, low = -(e < 1 - s); /* a mask: a select does not vectorise */
            k = (klow & low) | (khigh & ~low);
        } else {
            float t = y * (float)s;
            int32_t ti = (int32_t)t; /* floor: t >= 0 */
            k = ti + (rf < t - (float)ti);
            k = k > s ? s : k;
        }
        out[j] = (uint8_t)((k << 1) | ((k != 0) & (xv < 0)));
    }
}

TERSE_CLONES static void nat_codes(int s, const float *x, size_t lo, size_t m, float inv, uint64_t key, uint8_t *out)
{
    dither_codes(1, s, x, lo, m, inv, key, out);
}
TERSE_CLONES static void uni_codes(int s, const float *x, size_t lo, size_t m, float inv, uint64_t key, uint8_t *out)
{
    dither_codes(0, s, x, lo, m, inv, key, out);
}

/* Codes c[0, m) of values first.. (first a multiple of 8) into the stream. */
static void pack_codes(uint8_t *bits, size_t first, const uint8_t *c, size_t m, unsigned w)
{
    uint8_t *p = bits + first / 8 * w;
    for (size_t j = 0; j < m; j += 8) {
        size_t g = m - j < 8 ? m - j : 8;
        uint64_t acc = 0;
        for (size_t t = 0; t < g; t++)
            acc |= (uint64_t)c[j + t] << (t * w);
        size_t nbytes = (g * w + 7) / 8;
        for (size_t b = 0; b < nbytes; b++)
            p[b] = (uint8_t)(acc >> (8 * b));
        p += w;
    }
}

static void unpack_codes(const uint8_t *bits, const uint8_t *end, size_t first, uint8_t *c, size_t m, unsigned w)
{
    const uint8_t *p = bits + first / 8 * w;
    uint8_t mask = (uint8_t)((1u << w) - 1);
    size_t j = 0;
    /* whole groups with 8 readable bytes: one little-endian load each */
    for (; j + 8 <= m && p + 8 <= end; j += 8, p += w) {
        uint64_t acc;
        memcpy(&acc, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        acc = __builtin_bswap64(acc); /* the format is LSB first */
#endif
        for (size_t t = 0; t < 8; t++)
            c[j + t] = (uint8_t)(acc >> (t * w)) & mask;
    }
    for (; j < m; j += 8) {
        size_t g = m - j < 8 ? m - j : 8, nbytes = (g * w + 7) / 8;
        uint64_t acc = 0;
        for (size_t b = 0; b < nbytes && p + b < end; b++)
            acc |= (uint64_t)p[b] << (8 * b);
        for (size_t t = 0; t < g; t++)
            c[j + t] = (uint8_t)(acc >> (t * w)) & mask;
        p += w;
    }
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
    terse__codec_put_hdr(out, id, n);
    uint8_t *q = (uint8_t *)out + TERSE_CODEC_HDR, *bits = q + 4 * nb;
    int s = levels_of(p);
    uint64_t key = terse__rng_next(rng);
    for (size_t b = 0; b < nb; b++) {
        size_t lo = b * bsz, m = n - lo < bsz ? n - lo : bsz;
        float norm = bucket_norm(x + lo, m, p->norm);
        if (!isfinite(norm))
            return TERSE_ERR_INVALID_ARG; /* the bucket's norm overflows float */
        memcpy(q + 4 * b, &norm, 4);
    }
    uint8_t codes[CHUNK];
    for (size_t c0 = 0; c0 < n; c0 += CHUNK) {
        size_t c1 = n - c0 < CHUNK ? n : c0 + CHUNK;
        for (size_t lo = c0; lo < c1;) {
            size_t b = lo / bsz, hi = terse__bucket_span_end(lo, c1, bsz);
            float norm = terse__codec_f32_at(q, b), inv = norm > 0 ? 1.0f / norm : 0;
            (natural ? nat_codes : uni_codes)(s, x, lo, hi - lo, inv, key, codes + (lo - c0));
            lo = hi;
        }
        pack_codes(bits, c0, codes, c1 - c0, w);
    }
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
    const uint8_t *q = (const uint8_t *)code + TERSE_CODEC_HDR, *bits = q + 4 * nb, *end = (const uint8_t *)code + len;
    for (size_t b = 0; b < nb; b++) {
        float norm;
        memcpy(&norm, q + 4 * b, 4);
        if (!isfinite(norm) || norm < 0)
            return TERSE_ERR_PROTOCOL;
    }
    int s = levels_of(p);
    uint8_t codes[CHUNK], worst = 0;
    /* every level checked before acc is touched */
    for (size_t c0 = 0; c0 < n; c0 += CHUNK) {
        size_t m = n - c0 < CHUNK ? n - c0 : CHUNK;
        unpack_codes(bits, end, c0, codes, m, w);
        for (size_t j = 0; j < m; j++)
            worst = codes[j] > worst ? codes[j] : worst;
    }
    if ((worst >> 1) > s)
        return TERSE_ERR_PROTOCOL;
    float lv[64]; /* by code: level value, negated for an odd code */
    for (int k = 0; k < 64; k++) {
        float v = k >> 1 <= s ? level_value(natural, (uint32_t)(k >> 1), s) : 0;
        lv[k] = (k & 1) ? -v : v;
    }
    for (size_t c0 = 0; c0 < n; c0 += CHUNK) {
        size_t c1 = n - c0 < CHUNK ? n : c0 + CHUNK;
        unpack_codes(bits, end, c0, codes, c1 - c0, w);
        for (size_t lo = c0; lo < c1;) {
            size_t b = lo / bsz, hi = terse__bucket_span_end(lo, c1, bsz);
            float norm = terse__codec_f32_at(q, b);
            for (size_t i = lo; i < hi; i++)
                acc[i] += norm * lv[codes[i - c0]];
            lo = hi;
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
