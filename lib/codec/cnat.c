/*
 * cnat.c - natural compression C_nat (Horvath et al.), one byte per value:
 * bit 7 sign, bits 0-6 code = E - 17 for the float32 biased exponent
 * E in [18, 144], code 0 = zero (the authors' RDMA format). |t| = 2^a (1 + m)
 * rounds up to 2^(a+1) with probability m, else down to 2^a: unbiased, with
 * relative variance m(1-m)/(1+m)^2 <= 1/8. Below 2^-109 a value rounds to 0
 * or 2^-109, unbiased; at or above 2^17 it saturates to 2^17 (biased: gradients
 * that large mean the scale is wrong, not that bits are short).
 *
 * The loops are branch-free with an AVX-512 path (16 values per step) and a
 * portable one that produce the same bytes; the non-finite check is folded
 * into the encode pass.
 */
#include "codec.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_PATH 1
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#endif

static size_t cnat_bound(const terse_codec_params_t *p, size_t n)
{
    (void)p;
    return TERSE_CODEC_HDR + n;
}

/* One value: r23 uniform 23 bits; sets *bad for NaN or infinity. */
static inline uint8_t cnat_one(uint32_t u, uint32_t r23, uint32_t *bad)
{
    uint32_t a = u & 0x7fffffffu, e = a >> 23, m = a & 0x7fffffu;
    *bad |= e == 255;
    uint32_t code;
    if (e >= 18) {
        uint32_t eu = e + (r23 < m);
        code = (eu > 144 ? 144 : eu) - 17;
    } else { /* below 2^-109: 0 or 2^-109 with the right mean */
        float f;
        memcpy(&f, &a, 4);
        code = (float)r23 * 0x1p-23f < f * 0x1p109f;
    }
    return code ? (uint8_t)(((u >> 24) & 0x80) | code) : 0;
}

static size_t encode_portable(const float *x, size_t from, size_t n, uint8_t *c, uint64_t key, uint32_t *bad)
{
    for (size_t i = from; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        uint32_t r = (terse__hash32((uint32_t)i + (uint32_t)key) ^ (uint32_t)(key >> 32)) >> 9;
        c[i] = cnat_one(u, r, bad);
    }
    return n;
}

#ifdef HAVE_AVX512_PATH
AVX512 static size_t encode_avx512(const float *x, size_t n, uint8_t *c, uint64_t key, uint32_t *bad)
{
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i klo = _mm512_set1_epi32((int)(uint32_t)key), khi = _mm512_set1_epi32((int)(uint32_t)(key >> 32));
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), mant = _mm512_set1_epi32(0x7fffff);
    const __m512i e18 = _mm512_set1_epi32(18), e144 = _mm512_set1_epi32(144), e17 = _mm512_set1_epi32(17);
    const __m512i e255 = _mm512_set1_epi32(255), one = _mm512_set1_epi32(1), s80 = _mm512_set1_epi32(0x80);
    const __m512 tiny_scale = _mm512_set1_ps(0x1p109f), r_scale = _mm512_set1_ps(0x1p-23f);
    __mmask16 badm = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_loadu_si512((const void *)(x + i));
        __m512i h = _mm512_add_epi32(_mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)i), lane), klo);
        h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
        h = _mm512_mullo_epi32(h, _mm512_set1_epi32(0x7feb352d));
        h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 15));
        h = _mm512_mullo_epi32(h, _mm512_set1_epi32((int)0x846ca68bu));
        h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
        __m512i r = _mm512_srli_epi32(_mm512_xor_si512(h, khi), 9);
        __m512i a = _mm512_and_si512(u, absm), e = _mm512_srli_epi32(a, 23), m = _mm512_and_si512(a, mant);
        badm |= _mm512_cmpeq_epi32_mask(e, e255);
        __m512i eu = _mm512_mask_add_epi32(e, _mm512_cmplt_epu32_mask(r, m), e, one);
        __m512i code = _mm512_sub_epi32(_mm512_min_epu32(eu, e144), e17);
        __mmask16 tiny = _mm512_cmplt_epu32_mask(e, e18);
        if (tiny) {
            __mmask16 up = _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_cvtepi32_ps(r), r_scale),
                                              _mm512_mul_ps(_mm512_castsi512_ps(a), tiny_scale), _CMP_LT_OQ);
            code = _mm512_mask_mov_epi32(code, tiny, _mm512_maskz_mov_epi32(up, one));
        }
        __mmask16 nz = _mm512_test_epi32_mask(code, code);
        __m512i sign = _mm512_and_si512(_mm512_srli_epi32(u, 24), s80);
        code = _mm512_mask_or_epi32(code, nz, code, sign);
        _mm_storeu_si128((__m128i *)(c + i), _mm512_cvtepi32_epi8(code));
    }
    *bad |= badm != 0;
    return i;
}

AVX512 static size_t decode_avx512(const uint8_t *c, float *acc, size_t n)
{
    const __m512i k7f = _mm512_set1_epi32(0x7f), k80 = _mm512_set1_epi32(0x80), k17 = _mm512_set1_epi32(17);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + i)));
        __m512i k = _mm512_and_si512(b, k7f);
        __m512i u = _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(b, k80), 24),
                                    _mm512_slli_epi32(_mm512_add_epi32(k, k17), 23));
        u = _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(k, k), u);
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(acc + i), _mm512_castsi512_ps(u));
        _mm512_storeu_ps(acc + i, v);
    }
    return i;
}
#endif

static terse_status_t cnat_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    (void)p;
    if (n > UINT32_MAX)
        return TERSE_ERR_INVALID_ARG;
    terse__codec_put_hdr(out, TERSE_CODEC_CNAT8, n);
    uint8_t *c = (uint8_t *)out + TERSE_CODEC_HDR;
    uint64_t key = terse__rng_next(rng);
    uint32_t bad = 0;
    size_t done = 0;
#ifdef HAVE_AVX512_PATH
    if (terse__codec_simd())
        done = encode_avx512(x, n, c, key, &bad);
#endif
    encode_portable(x, done, n, c, key, &bad);
    if (bad)
        return TERSE_ERR_INVALID_ARG;
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
    size_t i = 0;
#ifdef HAVE_AVX512_PATH
    if (terse__codec_simd())
        i = decode_avx512(c, acc, n);
#endif
    for (; i < n; i++)
        acc[i] += terse__cnat8_value(c[i]);
    return TERSE_OK;
}

const terse_codec_ops_t terse_codec_cnat8 = {TERSE_CODEC_CNAT8, "cnat8", 1, cnat_bound, cnat_encode,
                                             cnat_decode_add, 0, 0};
