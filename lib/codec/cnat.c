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
 * portable one in chunks that GCC vectorises (cloned for AVX2), all giving the
 * same bytes; the non-finite check is folded into the encode pass.
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

#ifdef HAVE_AVX512_PATH
/* Large outputs that are written, not read, bypass the cache: no
 * read-for-ownership traffic, and the next pass's inputs stay cached. */
#define STREAM_OK(ptr, n) (((uintptr_t)(ptr) & 63) == 0 && (n) >= ((size_t)1 << 20))

/* 16 codes (in the low byte of each lane) for the float bits u of values i..i+15. */
AVX512 static inline __m512i cnat16(__m512i u, size_t i, uint64_t key, __mmask16 *badm)
{
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i h = _mm512_add_epi32(_mm512_add_epi32(_mm512_set1_epi32((int)(uint32_t)i), lane),
                                 _mm512_set1_epi32((int)(uint32_t)key));
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
    h = _mm512_mullo_epi32(h, _mm512_set1_epi32(0x7feb352d));
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 15));
    h = _mm512_mullo_epi32(h, _mm512_set1_epi32((int)0x846ca68bu));
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
    __m512i r = _mm512_srli_epi32(_mm512_xor_si512(h, _mm512_set1_epi32((int)(uint32_t)(key >> 32))), 9);
    __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), e = _mm512_srli_epi32(a, 23);
    __m512i m = _mm512_and_si512(a, _mm512_set1_epi32(0x7fffff));
    *badm |= _mm512_cmpeq_epi32_mask(e, _mm512_set1_epi32(255));
    __m512i eu = _mm512_mask_add_epi32(e, _mm512_cmplt_epu32_mask(r, m), e, _mm512_set1_epi32(1));
    __m512i code = _mm512_sub_epi32(_mm512_min_epu32(eu, _mm512_set1_epi32(144)), _mm512_set1_epi32(17));
    __mmask16 tiny = _mm512_cmplt_epu32_mask(e, _mm512_set1_epi32(18));
    if (tiny) { /* below 2^-109: 0 or 2^-109 with the right mean */
        __mmask16 up = _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_cvtepi32_ps(r), _mm512_set1_ps(0x1p-23f)),
                                          _mm512_mul_ps(_mm512_castsi512_ps(a), _mm512_set1_ps(0x1p109f)),
                                          _CMP_LT_OQ);
        code = _mm512_mask_mov_epi32(code, tiny, _mm512_maskz_mov_epi32(up, _mm512_set1_epi32(1)));
    }
    __mmask16 nz = _mm512_test_epi32_mask(code, code);
    __m512i sign = _mm512_and_si512(_mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80));
    return _mm512_mask_or_epi32(code, nz, code, sign);
}

/* The float value of 16 codes (one per lane). */
AVX512 static inline __m512 value16(__m512i b)
{
    __m512i k = _mm512_and_si512(b, _mm512_set1_epi32(0x7f));
    __m512i u = _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(b, _mm512_set1_epi32(0x80)), 24),
                                _mm512_slli_epi32(_mm512_add_epi32(k, _mm512_set1_epi32(17)), 23));
    return _mm512_castsi512_ps(_mm512_maskz_mov_epi32(_mm512_test_epi32_mask(k, k), u));
}

AVX512 static size_t encode_avx512(const float *x, size_t n, uint8_t *c, uint64_t key, uint32_t *bad)
{
    __mmask16 badm = 0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i code = cnat16(_mm512_loadu_si512((const void *)(x + i)), i, key, &badm);
        _mm_storeu_si128((__m128i *)(c + i), _mm512_cvtepi32_epi8(code));
    }
    *bad |= badm != 0;
    return i;
}

AVX512 static size_t encode_ef_avx512(const float *u, const float *e_in, float *e_out, size_t n, uint8_t *c,
                                      uint64_t key, uint32_t *bad)
{
    __mmask16 badm = 0;
    int stream = STREAM_OK(e_out, n);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 p = _mm512_loadu_ps(u + i);
        if (e_in)
            p = _mm512_add_ps(p, _mm512_loadu_ps(e_in + i));
        __m512i code = cnat16(_mm512_castps_si512(p), i, key, &badm);
        _mm_storeu_si128((__m128i *)(c + i), _mm512_cvtepi32_epi8(code));
        __m512 res = _mm512_sub_ps(p, value16(code));
        if (stream)
            _mm512_stream_ps(e_out + i, res);
        else
            _mm512_storeu_ps(e_out + i, res);
    }
    if (stream)
        _mm_sfence();
    *bad |= badm != 0;
    return i;
}

AVX512 static size_t decode_avx512(const uint8_t *c, float *acc, size_t n, int add)
{
    int stream = !add && STREAM_OK(acc, n);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = value16(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + i))));
        if (add)
            _mm512_storeu_ps(acc + i, _mm512_add_ps(_mm512_loadu_ps(acc + i), v));
        else if (stream)
            _mm512_stream_ps(acc + i, v);
        else
            _mm512_storeu_ps(acc + i, v);
    }
    if (stream)
        _mm_sfence();
    return i;
}
#endif


/* The portable chunk: values lo..lo+m of p = u (+ e_in) to codes, and with
 * e_out the residual p - decode(code). Branch-free selects only (both cases
 * are computed: 2^-109 and above, and the 0-or-2^-109 rounding below), so it
 * vectorises; the same bits as the AVX-512 path. */
#define CNAT_CHUNK 512
static inline __attribute__((always_inline)) uint32_t cnat_body(const float *restrict u, const float *restrict e_in,
                                                                float *restrict e_out, size_t lo, size_t m,
                                                                uint64_t key, uint8_t *restrict c, const int with_e,
                                                                const int with_out)
{
    const uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    int32_t bad = 0;
    for (size_t j = 0; j < m; j++) {
        size_t i = lo + j;
        union { float f; int32_t i; } p = {.f = with_e ? u[i] + e_in[i] : u[i]}, mag;
        int32_t r = (int32_t)((terse__hash32((uint32_t)i + k0) ^ k1) >> 9);
        int32_t a = p.i & 0x7fffffff, e = a >> 23, mant = a & 0x7fffff;
        bad |= e == 255;
        int32_t eu = e + (r < mant);
        int32_t big = (eu < 144 ? eu : 144) - 17;
        mag.i = a;
        int32_t tiny = (float)r * 0x1p-23f < mag.f * 0x1p109f; /* below 2^-109: 0 or 2^-109 */
        int32_t isbig = -(e >= 18), code = (big & isbig) | (tiny & ~isbig); /* masks: a select does not vectorise */
        int32_t nz = -(code != 0), out = (((p.i >> 24) & 0x80) | code) & nz;
        c[i] = (uint8_t)out;
        if (with_out) {
            union { uint32_t i; float f; } v = {.i = ((((uint32_t)out & 0x80u) << 24) | ((uint32_t)(code + 17) << 23)) &
                                                     (uint32_t)nz};
            e_out[i] = p.f - v.f;
        }
    }
    return (uint32_t)bad;
}

TERSE_CLONES static uint32_t cnat_chunk(const float *u, const float *e_in, float *e_out, size_t lo, size_t m,
                                        uint64_t key, uint8_t *c)
{
    /* one loop per case, so that each has no branch inside */
    if (e_out)
        return e_in ? cnat_body(u, e_in, e_out, lo, m, key, c, 1, 1) : cnat_body(u, NULL, e_out, lo, m, key, c, 0, 1);
    return e_in ? cnat_body(u, e_in, NULL, lo, m, key, c, 1, 0) : cnat_body(u, NULL, NULL, lo, m, key, c, 0, 0);
}

static terse_status_t cnat_decode_as(const void *code, size_t len, float *acc, size_t n, int add)
{
    if (terse__codec_check_hdr(code, len, TERSE_CODEC_CNAT8, n) || len != TERSE_CODEC_HDR + n)
        return TERSE_ERR_PROTOCOL;
    const uint8_t *c = (const uint8_t *)code + TERSE_CODEC_HDR;
    size_t i = 0;
#ifdef HAVE_AVX512_PATH
    if (terse__codec_simd())
        i = decode_avx512(c, acc, n, add);
#endif
    for (; i < n; i++)
        acc[i] = (add ? acc[i] : 0.0f) + terse__cnat8_value(c[i]);
    return TERSE_OK;
}

static terse_status_t cnat_decode_add(const terse_codec_params_t *p, const void *code, size_t len, float *acc,
                                      size_t n)
{
    (void)p;
    return cnat_decode_as(code, len, acc, n, 1);
}

static terse_status_t cnat_decode(const terse_codec_params_t *p, const void *code, size_t len, float *out,
                                  size_t n)
{
    (void)p;
    return cnat_decode_as(code, len, out, n, 0);
}

/* code = C_nat(u + e_in); with e_out, also e_out = (u + e_in) - decode(code).
 * e_in may be NULL (zero); both NULL is the plain encode. */
static terse_status_t cnat_encode_any(const float *u, const float *e_in, float *e_out, size_t n, void *out,
                                      size_t *len, terse_rng_t *rng)
{
    if (n > UINT32_MAX)
        return TERSE_ERR_INVALID_ARG;
    terse__codec_put_hdr(out, TERSE_CODEC_CNAT8, n);
    uint8_t *c = (uint8_t *)out + TERSE_CODEC_HDR;
    uint64_t key = terse__rng_next(rng);
    uint32_t bad = 0;
    size_t i = 0;
#ifdef HAVE_AVX512_PATH
    if (terse__codec_simd())
        i = e_out ? encode_ef_avx512(u, e_in, e_out, n, c, key, &bad) : e_in ? 0 : encode_avx512(u, n, c, key, &bad);
#endif
    for (; i < n; i += CNAT_CHUNK)
        bad |= cnat_chunk(u, e_in, e_out, i, n - i < CNAT_CHUNK ? n - i : CNAT_CHUNK, key, c);
    if (bad)
        return TERSE_ERR_INVALID_ARG;
    *len = TERSE_CODEC_HDR + n;
    return TERSE_OK;
}

static terse_status_t cnat_encode(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                                  size_t *len, terse_rng_t *rng)
{
    (void)p;
    return cnat_encode_any(x, NULL, NULL, n, out, len, rng);
}

static terse_status_t cnat_encode_ef(const terse_codec_params_t *p, const float *u, const float *e_in,
                                     float *e_out, size_t n, void *out, size_t *len, terse_rng_t *rng)
{
    (void)p;
    return cnat_encode_any(u, e_in, e_out, n, out, len, rng);
}

const terse_codec_ops_t terse_codec_cnat8 = {TERSE_CODEC_CNAT8, "cnat8", 1, cnat_bound, cnat_encode,
                                             cnat_decode_add, 0, 0, cnat_encode_ef, cnat_decode};
