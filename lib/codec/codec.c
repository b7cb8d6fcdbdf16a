/* codec.c - the codec table and the header every code starts with. */
#include "codec.h"

#include <math.h>
#include <string.h>

#define CODEC_MAGIC 0x4354u /* "TC" */

static const terse_codec_ops_t *const codecs[] = {
    &terse_codec_fp32, &terse_codec_fp16, &terse_codec_bf16, &terse_codec_cnat8, &terse_codec_sign, &terse_codec_topk,
    &terse_codec_cnat9, &terse_codec_natdither, &terse_codec_qsgd, &terse_codec_sign1, &terse_codec_randk,
    &terse_codec_topk_cnat, &terse_codec_randk_cnat,
};
#define NCODECS (sizeof(codecs) / sizeof(codecs[0]))

const terse_codec_ops_t *terse__codec(terse_codec_id_t id)
{
    for (size_t i = 0; i < NCODECS; i++)
        if (codecs[i]->id == id)
            return codecs[i];
    return NULL;
}

const terse_codec_ops_t *terse__codec_by_name(const char *name)
{
    for (size_t i = 0; i < NCODECS; i++)
        if (strcmp(codecs[i]->name, name) == 0)
            return codecs[i];
    return NULL;
}

void terse__codec_put_hdr(void *out, terse_codec_id_t id, size_t n)
{
    unsigned char *h = out;
    uint16_t magic = CODEC_MAGIC;
    uint64_t nn = n;
    memcpy(h, &magic, 2);
    h[2] = (unsigned char)id;
    h[3] = 0;
    memcpy(h + 4, &nn, 8);
}

int terse__codec_check_hdr(const void *code, size_t len, terse_codec_id_t id, size_t n)
{
    const unsigned char *h = code;
    uint16_t magic;
    uint64_t nn;
    if (!code || len < TERSE_CODEC_HDR)
        return -1;
    memcpy(&magic, h, 2);
    memcpy(&nn, h + 4, 8);
    return (magic == CODEC_MAGIC && h[2] == (unsigned char)id && h[3] == 0 && nn == n) ? 0 : -1;
}

void terse__codec_put_poison(void *out, terse_codec_id_t id, size_t n, size_t len)
{
    memset(out, 0, len);
    terse__codec_put_hdr(out, id, n);
    ((unsigned char *)out)[3] = TERSE_CODEC_FLAG_POISON;
}

int terse__codec_poisoned(const void *code, size_t len)
{
    const unsigned char *h = code;
    uint16_t magic;
    if (!code || len < TERSE_CODEC_HDR)
        return 0;
    memcpy(&magic, h, 2);
    return magic == CODEC_MAGIC && h[3] == TERSE_CODEC_FLAG_POISON;
}

terse_status_t terse__codec_encode_ef(const terse_codec_ops_t *codec, const terse_codec_params_t *cp,
                                      const float *u, const float *e_in, float *e_out, size_t n, void *code,
                                      size_t *len, terse_rng_t *rng)
{
    if (!e_out)
        return codec->encode(cp, u, n, code, len, rng);
    if (codec->encode_ef)
        return codec->encode_ef(cp, u, e_in, e_out, n, code, len, rng);
    for (size_t i = 0; i < n; i++)
        e_out[i] = e_in ? u[i] + e_in[i] : u[i];
    terse_status_t st = codec->encode(cp, e_out, n, code, len, rng);
    if (st != TERSE_OK)
        return st;
    /* p - decode(code), exactly: negate (exact), add the decoded values,
     * negate back - IEEE rounding is symmetric, so this equals a
     * subtraction and needs no scratch vector. */
    for (size_t i = 0; i < n; i++)
        e_out[i] = -e_out[i];
    st = codec->decode_add(cp, code, *len, e_out, n);
    for (size_t i = 0; i < n; i++)
        e_out[i] = -e_out[i];
    return st;
}

int terse__codec_nonfinite(const float *x, size_t n)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        bad |= !isfinite(x[i]);
    return bad;
}

static int simd_level = -1;

static int cpu_has_avx512(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

int terse__codec_simd(void)
{
    if (simd_level < 0)
        simd_level = cpu_has_avx512();
    return simd_level;
}

void terse__codec_set_simd(int on)
{
    simd_level = on ? cpu_has_avx512() : 0;
}
