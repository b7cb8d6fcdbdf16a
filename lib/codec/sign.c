/*
 * sign.c - scaled sign (1 bit per value and one scale): decode(x)_i =
 * sign(x_i) * ||x||_1 / n, with sign(0) = +1 (also for -0). Deterministic
 * and biased: it is meant to run under error feedback.
 *
 * The L1 norm is summed in 16 double lanes (lane j takes i = j mod 16) and
 * the lanes are added in order, so the AVX-512 path and the portable path
 * give the same scale to the last bit. A non-finite input shows up as a
 * non-finite norm: no separate pass.
 */
#include "codec.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_PATH 1
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#endif

static size_t sign_bound(const terse_codec_params_t *p, size_t n)
{
    (void)p;
    return TERSE_CODEC_HDR + 4 + (n + 7) / 8;
}

#ifdef HAVE_AVX512_PATH

/* mode 0: acc = +-scale; 1: acc += +-scale; 2: acc -= +-scale (the residual p - decode) */
AVX512 static void decode_avx512(const unsigned char *bits, float scale, float *acc, size_t n16, int mode)
{
    const __m512 pos = _mm512_set1_ps(scale), negv = _mm512_set1_ps(-scale);
    for (size_t i = 0; i < n16; i += 16) {
        __mmask16 m;
        memcpy(&m, bits + i / 8, 2);
        __m512 v = _mm512_mask_blend_ps(m, pos, negv);
        if (mode == 1)
            v = _mm512_add_ps(_mm512_loadu_ps(acc + i), v);
        else if (mode == 2)
            v = _mm512_sub_ps(_mm512_loadu_ps(acc + i), v);
        _mm512_storeu_ps(acc + i, v);
    }
}

/* Values [0, n16), n16 a multiple of 16: the norm lanes and sign bits of
 * p = u + e_in (e_in may be NULL), p stored in p_out unless it is NULL. */
AVX512 static void sum_encode_avx512(const float *u, const float *e_in, float *p_out, size_t n16,
                                     double lanes[16], unsigned char *bits)
{
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    const __m512 zero = _mm512_setzero_ps();
    for (size_t i = 0; i < n16; i += 16) {
        __m512 v = _mm512_loadu_ps(u + i);
        if (e_in)
            v = _mm512_add_ps(v, _mm512_loadu_ps(e_in + i));
        if (p_out)
            _mm512_storeu_ps(p_out + i, v);
        __m512 a = _mm512_abs_ps(v);
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(a)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1))));
        __mmask16 neg = _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ);
        memcpy(bits + i / 8, &neg, 2);
    }
    _mm512_storeu_pd(lanes, lo);
    _mm512_storeu_pd(lanes + 8, hi);
}
#endif

/* Values [lo, hi) (lo and hi multiples of 16) in blocks of 16: lane j of the
 * norm takes value i = j mod 16, as the AVX-512 path and the tail do; the
 * inner loop over the 16 lanes is what GCC vectorises (AVX2 clone). */
static inline __attribute__((always_inline)) void
scan16_body(const float *u, const float *e_in, float *p_out, size_t lo, size_t hi, double *lanes,
            unsigned char *restrict bits, const int with_e, const int with_p)
{
    double acc[16];
    for (int j = 0; j < 16; j++)
        acc[j] = lanes[j];
    for (size_t i = lo; i < hi; i += 16) {
        uint32_t m = 0;
        for (int j = 0; j < 16; j++) {
            float v = with_e ? u[i + (size_t)j] + e_in[i + (size_t)j] : u[i + (size_t)j];
            if (with_p)
                p_out[i + (size_t)j] = v;
            acc[j] += fabs((double)v);
            m |= (uint32_t)(v < 0) << j;
        }
        bits[i / 8] = (unsigned char)m;
        bits[i / 8 + 1] = (unsigned char)(m >> 8);
    }
    for (int j = 0; j < 16; j++)
        lanes[j] = acc[j];
}

TERSE_CLONES static void scan16(const float *u, const float *e_in, float *p_out, size_t lo, size_t hi, double *lanes,
                                unsigned char *bits)
{
    /* p_out may alias u: written after it is read, value by value */
    if (p_out)
        e_in ? scan16_body(u, e_in, p_out, lo, hi, lanes, bits, 1, 1) : scan16_body(u, NULL, p_out, lo, hi, lanes, bits, 0, 1);
    else
        e_in ? scan16_body(u, e_in, NULL, lo, hi, lanes, bits, 1, 0) : scan16_body(u, NULL, NULL, lo, hi, lanes, bits, 0, 0);
}

/* Norm lanes and sign bits of p = u + e_in (e_in may be NULL), p stored in
 * p_out when it is not NULL (p_out may alias u). Returns the scale, or a
 * negative value when the input holds NaN or infinity. */
static float sign_scan(const float *u, const float *e_in, float *p_out, size_t n, unsigned char *bits)
{
    memset(bits, 0, (n + 7) / 8);
    double lanes[16] = {0};
    size_t i = 0, n16 = n & ~(size_t)15;
#ifdef HAVE_AVX512_PATH
    if (terse__codec_simd()) {
        sum_encode_avx512(u, e_in, p_out, n16, lanes, bits);
        i = n16;
    }
#endif
    if (i < n16) {
        scan16(u, e_in, p_out, i, n16, lanes, bits);
        i = n16;
    }
    for (; i < n; i++) {
        float v = e_in ? u[i] + e_in[i] : u[i];
        if (p_out)
            p_out[i] = v;
        lanes[i % 16] += fabs((double)v);
        if (v < 0)
            bits[i / 8] |= (unsigned char)(1u << (i % 8));
    }
    double l1 = 0;
    for (int j = 0; j < 16; j++)
        l1 += lanes[j];
    if (!isfinite(l1))
        return -1;
    return n ? (float)(l1 / (double)n) : 0.0f;
}

/* Decode of values [0, n16) in blocks of 16: the sign bit flips the scale's
 * (an integer xor, no select), mode as sign_apply. */
static inline __attribute__((always_inline)) void apply16_body(const unsigned char *restrict bits, float scale,
                                                               float *restrict out, size_t n16, const int mode)
{
    union { float f; uint32_t i; } sc = {.f = scale};
    for (size_t i = 0; i < n16; i += 16) {
        uint32_t m = (uint32_t)bits[i / 8] | (uint32_t)bits[i / 8 + 1] << 8;
        for (int j = 0; j < 16; j++) {
            union { uint32_t i; float f; } v = {.i = sc.i ^ (((m >> j) & 1u) << 31)};
            out[i + (size_t)j] = mode == 0 ? v.f : mode == 1 ? out[i + (size_t)j] + v.f : out[i + (size_t)j] - v.f;
        }
    }
}

TERSE_CLONES static void apply16(const unsigned char *bits, float scale, float *out, size_t n16, int mode)
{
    if (mode == 0)
        apply16_body(bits, scale, out, n16, 0);
    else if (mode == 1)
        apply16_body(bits, scale, out, n16, 1);
    else
        apply16_body(bits, scale, out, n16, 2);
}

/* mode 0: out = decode; 1: out += decode; 2: out -= decode */
static void sign_apply(const unsigned char *bits, float scale, float *out, size_t n, int mode)
{
    size_t i = 0, n16 = n & ~(size_t)15;
#ifdef HAVE_AVX512_PATH
    if (terse__codec_simd()) {
        decode_avx512(bits, scale, out, n16, mode);
        i = n16;
    }
#endif
    if (i < n16) {
        apply16(bits, scale, out, n16, mode);
        i = n16;
    }
    for (; i < n; i++) {
        float v = (bits[i / 8] >> (i % 8)) & 1 ? -scale : scale;
        out[i] = mode == 0 ? v : mode == 1 ? out[i] + v : out[i] - v;
    }
}

static terse_status_t sign_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    (void)rng;
    terse__codec_put_hdr(out, TERSE_CODEC_SIGN, n);
    unsigned char *q = (unsigned char *)out + TERSE_CODEC_HDR;
    float scale = sign_scan(x, NULL, NULL, n, q + 4);
    if (scale < 0)
        return TERSE_ERR_INVALID_ARG;
    memcpy(q, &scale, 4);
    *len = sign_bound(p, n);
    return TERSE_OK;
}

static terse_status_t sign_encode_ef(const terse_codec_params_t *p, const float *u, const float *e_in,
                                     float *e_out, size_t n, void *out, size_t *len, terse_rng_t *rng)
{
    (void)rng;
    terse__codec_put_hdr(out, TERSE_CODEC_SIGN, n);
    unsigned char *q = (unsigned char *)out + TERSE_CODEC_HDR;
    float scale = sign_scan(u, e_in, e_out, n, q + 4); /* e_out holds p for now */
    if (scale < 0)
        return TERSE_ERR_INVALID_ARG;
    memcpy(q, &scale, 4);
    sign_apply(q + 4, scale, e_out, n, 2);
    *len = sign_bound(p, n);
    return TERSE_OK;
}

static terse_status_t sign_decode_as(const terse_codec_params_t *p, const void *code, size_t len, float *acc,
                                     size_t n, int mode)
{
    if (terse__codec_check_hdr(code, len, TERSE_CODEC_SIGN, n) || len != sign_bound(p, n))
        return TERSE_ERR_PROTOCOL;
    const unsigned char *q = (const unsigned char *)code + TERSE_CODEC_HDR;
    float scale;
    memcpy(&scale, q, 4);
    if (!isfinite(scale) || scale < 0)
        return TERSE_ERR_PROTOCOL;
    sign_apply(q + 4, scale, acc, n, mode);
    return TERSE_OK;
}

static terse_status_t sign_decode_add(const terse_codec_params_t *p, const void *code, size_t len, float *acc,
                                      size_t n)
{
    return sign_decode_as(p, code, len, acc, n, 1);
}

static terse_status_t sign_decode(const terse_codec_params_t *p, const void *code, size_t len, float *out,
                                  size_t n)
{
    return sign_decode_as(p, code, len, out, n, 0);
}

const terse_codec_ops_t terse_codec_sign = {TERSE_CODEC_SIGN, "sign", 0, sign_bound, sign_encode,
                                            sign_decode_add, 1, 0, sign_encode_ef, sign_decode};
