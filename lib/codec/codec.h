/*
 * codec.h - gradient compressors behind one small, stateless ops table.
 *
 * A codec turns n float32 values into bytes and back. It is pure: all state
 * (error-feedback residuals, random streams) belongs to the caller - the
 * persistent compressed collective - so a codec can be tested alone.
 *
 * Wire format of every code: a 12-byte header (magic, codec id, flags, n)
 * then the codec's payload. decode_add() checks the header and the exact
 * length before it touches acc, so malformed input is an error, never a
 * wrong sum.
 *
 * Edge values: encoders reject NaN and infinities with TERSE_ERR_INVALID_ARG
 * (a non-finite gradient is a training bug to report, not to compress);
 * signed zeros decode as +0; values beyond a format's range saturate
 * (documented per codec).
 */
#ifndef TERSE_CODEC_H
#define TERSE_CODEC_H

#include "terse.h"

#include <stddef.h>
#include <stdint.h>

/* Hot loops built for AVX2 too, chosen at load time (an ifunc). Not under
 * ThreadSanitizer: the resolver would run instrumented before TSan starts. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define TERSE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define TERSE_CLONES
#endif

typedef enum {
    TERSE_CODEC_FP32 = 0, /* identity: the values as they are */
    TERSE_CODEC_FP16 = 1,
    TERSE_CODEC_BF16,
    TERSE_CODEC_CNAT8,  /* natural compression, 1 byte: sign + 7-bit exponent */
    TERSE_CODEC_SIGN,   /* scaled sign: 1 bit per value + one float scale */
    TERSE_CODEC_TOPK,   /* k largest magnitudes as (uint32 index, float value) */
    TERSE_CODEC_CNAT9,  /* natural compression, 9 bits: sign + full exponent */
    TERSE_CODEC_NATDITHER, /* natural dithering: sign + level index, norm per bucket */
    TERSE_CODEC_QSGD,   /* uniform random dithering (the baseline natdither beats) */
    TERSE_CODEC_SIGN1,  /* unbiased stochastic 1-bit, max-norm per bucket */
    TERSE_CODEC_RANDK,  /* k random values (shared seed), scaled by n/k */
    TERSE_CODEC_TOPK_CNAT,  /* top-k with C_nat values */
    TERSE_CODEC_RANDK_CNAT, /* random-k with C_nat values */
    TERSE_CODEC_COUNT
} terse_codec_id_t;

typedef struct terse_codec_params {
    double ratio;         /* top-k, random-k: k = max(1, floor(ratio * n)) */
    int levels;           /* natural dithering: s; QSGD: number of levels */
    int norm;             /* dithering: p of the p-norm (0: max norm) */
    size_t bucket;        /* values per norm / scale (0: 512) */
    uint64_t shared_seed; /* random-k: the index stream, equal on every rank */
    int no_rescale;       /* random-k: the input is already supported on the shared
                           * positions and scaled (an owner re-encoding a sum) */
} terse_codec_params_t;

/* Counter-based random stream: value i of stream (seed, stream) is a pure
 * function of the three, so ranks and restarts reproduce it exactly. */
typedef struct terse_rng {
    uint64_t seed, counter;
} terse_rng_t;

static inline uint64_t terse__rng_next(terse_rng_t *r)
{
    /* splitmix64 of (seed, counter): passes BigCrush as a counter-based generator */
    uint64_t z = r->seed + 0x9e3779b97f4a7c15ull * ++r->counter;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

#define TERSE_CODEC_HDR 12

/* 32-bit integer hash (Wellons' lowbias32): the per-value random bits of the
 * vectorised codecs, where a 64-bit generator per lane would cost too much.
 * Value i of a call gets terse__hash32(i + key) ^ (key >> 32), key one draw
 * of the call's stream, in the scalar and the SIMD paths alike. */
static inline uint32_t terse__hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* 1 when the AVX-512 paths run (the CPU has AVX-512 F/BW/DQ/VL); tests may
 * force the portable path with terse__codec_set_simd(0) to compare both. */
int terse__codec_simd(void);
void terse__codec_set_simd(int on);

/* A uniform float in [0, 1) from the stream (24 random bits). */
static inline float terse__rng_unit(terse_rng_t *r)
{
    return (float)(terse__rng_next(r) >> 40) * 0x1p-24f;
}

/*
 * C_nat on float32 bits, shared by cnat8 and the compositions: |t| = 2^a (1+m)
 * rounds up to 2^(a+1) iff a 23-bit uniform r is below the mantissa m, so the
 * result is unbiased. Returns the float bits with a zero mantissa (the
 * exponent may reach 255 only if the input did; callers clip).
 */
static inline uint32_t terse__cnat_round(uint32_t u, uint32_t r23)
{
    uint32_t up = (r23 < (u & 0x7fffffu)) ? 1u : 0u;
    return (u & 0xff800000u) + (up << 23);
}

/* The 8-bit C_nat code (bit 7 sign, bits 0-6 = E - 17 for E in [18, 144],
 * 0 = zero) of a float; r23 drives the rounding. */
static inline uint8_t terse__cnat8_quantize(float v, uint32_t r23)
{
    uint32_t u;
    __builtin_memcpy(&u, &v, 4);
    uint8_t sign = (uint8_t)((u >> 24) & 0x80);
    uint32_t a = u & 0x7fffffffu;
    if (a == 0)
        return 0;
    if ((a >> 23) < 18) {
        /* below the smallest code 2^-109: 0 or 2^-109 with the right mean */
        float f;
        __builtin_memcpy(&f, &a, 4);
        uint8_t code = (double)r23 * 0x1p-23 < (double)f * 0x1p109 ? 1 : 0;
        return code ? (uint8_t)(sign | code) : 0;
    }
    uint32_t e = terse__cnat_round(a, r23) >> 23;
    return (uint8_t)(sign | (e > 144 ? 127 : e - 17));
}

static inline float terse__cnat8_value(uint8_t c)
{
    uint32_t k = c & 0x7fu;
    uint32_t u = k ? ((uint32_t)(c & 0x80) << 24) | ((k + 17) << 23) : 0;
    float v;
    __builtin_memcpy(&v, &u, 4);
    return v;
}

/* Bit packing of fixed-width fields (width <= 25), LSB first, through a
 * 64-bit accumulator: a writer appends fields in order, a reader takes them
 * in order. Used by the dithering codecs. */
typedef struct {
    uint8_t *out;
    uint64_t acc;
    unsigned bits;
} terse_bitw_t;

static inline void terse__bitw_put(terse_bitw_t *w, uint32_t v, unsigned width)
{
    w->acc |= (uint64_t)v << w->bits;
    w->bits += width;
    while (w->bits >= 8) {
        *w->out++ = (uint8_t)w->acc;
        w->acc >>= 8;
        w->bits -= 8;
    }
}

static inline void terse__bitw_flush(terse_bitw_t *w)
{
    if (w->bits)
        *w->out++ = (uint8_t)w->acc;
    w->acc = 0, w->bits = 0;
}

/* Chunked codecs (cnat9, dithering, 1-bit) make codes for CHUNK values at a
 * time (a multiple of 8, so a chunk starts on a byte of any packed stream);
 * buckets may split a chunk: the span from lo to the end of lo's bucket or of
 * the chunk (c1), whichever comes first. */
#define TERSE_CODEC_CHUNK 512
static inline size_t terse__bucket_span_end(size_t lo, size_t c1, size_t bucket)
{
    size_t e = (lo / bucket + 1) * bucket;
    return e < c1 ? e : c1;
}

/* The float stored at byte offset 4 * i of p (per-bucket norms, maxima). */
static inline float terse__codec_f32_at(const uint8_t *p, size_t i)
{
    float f;
    __builtin_memcpy(&f, p + 4 * i, 4);
    return f;
}

typedef struct {
    const uint8_t *in, *end;
    uint64_t acc;
    unsigned bits;
} terse_bitr_t;

static inline uint32_t terse__bitr_get(terse_bitr_t *r, unsigned width)
{
    while (r->bits < width) {
        r->acc |= (uint64_t)(r->in < r->end ? *r->in++ : 0) << r->bits;
        r->bits += 8;
    }
    uint32_t v = (uint32_t)(r->acc & ((1ull << width) - 1));
    r->acc >>= width;
    r->bits -= width;
    return v;
}

typedef struct terse_codec_ops {
    terse_codec_id_t id;
    const char *name;
    int stochastic; /* uses the random stream */
    /* Largest code for n values, header included. */
    size_t (*bound)(const terse_codec_params_t *p, size_t n);
    /* Encode x[0..n) into out (>= bound bytes); *len gets the code's size. */
    terse_status_t (*encode)(const terse_codec_params_t *p, const float *x, size_t n, void *out,
                             size_t *len, terse_rng_t *rng);
    /* acc[0..n) += decode(code). Malformed or mismatched code: TERSE_ERR_PROTOCOL, acc untouched. */
    terse_status_t (*decode_add)(const terse_codec_params_t *p, const void *code, size_t len, float *acc,
                                 size_t n);
    int biased; /* E[decode] != x: run it under error feedback, never per-hop in a ring */
    int shared_support; /* positions drawn from the shared seed (random-k): a sum of codes
                         * lives on them, so owners re-encode without rescaling */
    /* Optional fused forms (NULL: the collective composes them from the above).
     * encode_ef: p = u + e_in; code = C(p); e_out = p - decode(code), in one
     * pass (e_out may be e_in; e_in NULL means zero). TERSE_ERR_INVALID_ARG
     * for non-finite input, with code and e_out undefined. */
    terse_status_t (*encode_ef)(const terse_codec_params_t *p, const float *u, const float *e_in,
                                float *e_out, size_t n, void *out, size_t *len, terse_rng_t *rng);
    /* out[0..n) = decode(code) (overwrites; same checks as decode_add). */
    terse_status_t (*decode)(const terse_codec_params_t *p, const void *code, size_t len, float *out,
                             size_t n);
} terse_codec_ops_t;

const terse_codec_ops_t *terse__codec(terse_codec_id_t id);
const terse_codec_ops_t *terse__codec_by_name(const char *name);

/* Header helpers shared by the codecs. */
void terse__codec_put_hdr(void *out, terse_codec_id_t id, size_t n);
/* Check magic, id and n; 0 when the header is right. */
int terse__codec_check_hdr(const void *code, size_t len, terse_codec_id_t id, size_t n);
/* A poisoned code stands in for input that could not be encoded (NaN or
 * infinity): it has the right length so every rank finishes the exchange,
 * and every decoder refuses it, so all ranks return TERSE_ERR_INVALID_ARG
 * without breaking the communicator. */
#define TERSE_CODEC_FLAG_POISON 1
void terse__codec_put_poison(void *out, terse_codec_id_t id, size_t n, size_t len);
int terse__codec_poisoned(const void *code, size_t len);
/* Encode with worker feedback: p = u + e_in (e_in NULL: zero), code = C(p),
 * e_out = p - decode(code); e_out NULL: plain encode of u. The codec's fused
 * form when it has one. */
terse_status_t terse__codec_encode_ef(const terse_codec_ops_t *codec, const terse_codec_params_t *cp,
                                      const float *u, const float *e_in, float *e_out, size_t n, void *code,
                                      size_t *len, terse_rng_t *rng);
/* Any NaN or infinity in x? */
int terse__codec_nonfinite(const float *x, size_t n);

extern const terse_codec_ops_t terse_codec_fp32, terse_codec_fp16, terse_codec_bf16, terse_codec_cnat8,
    terse_codec_sign, terse_codec_topk, terse_codec_cnat9, terse_codec_natdither, terse_codec_qsgd,
    terse_codec_sign1, terse_codec_randk, terse_codec_topk_cnat, terse_codec_randk_cnat;

#endif
