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

typedef enum {
    TERSE_CODEC_FP16 = 1,
    TERSE_CODEC_BF16,
    TERSE_CODEC_CNAT8,  /* natural compression, 1 byte: sign + 7-bit exponent */
    TERSE_CODEC_SIGN,   /* scaled sign: 1 bit per value + one float scale */
    TERSE_CODEC_TOPK,   /* k largest magnitudes as (uint32 index, float value) */
    TERSE_CODEC_COUNT
} terse_codec_id_t;

typedef struct terse_codec_params {
    double ratio; /* top-k: k = max(1, floor(ratio * n)) */
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
} terse_codec_ops_t;

const terse_codec_ops_t *terse__codec(terse_codec_id_t id);
const terse_codec_ops_t *terse__codec_by_name(const char *name);

/* Header helpers shared by the codecs. */
void terse__codec_put_hdr(void *out, terse_codec_id_t id, size_t n);
/* Check magic, id and n; 0 when the header is right. */
int terse__codec_check_hdr(const void *code, size_t len, terse_codec_id_t id, size_t n);
/* Any NaN or infinity in x? */
int terse__codec_nonfinite(const float *x, size_t n);

extern const terse_codec_ops_t terse_codec_fp16, terse_codec_bf16, terse_codec_cnat8, terse_codec_sign,
    terse_codec_topk;

#endif
