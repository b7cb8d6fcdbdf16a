/*
 * compressed_codec.c - the codec work every compressed algorithm shares:
 * encode with worker feedback, decode, the owner's re-compression, the
 * per-step shared seed, and reporting a malformed code.
 */
#include "compressed.h"
#include "../executor.h"
#include "../net.h"

#include <string.h>

terse_status_t terse__compressed_bad_code(terse_compressed_t *c, int peer, const char *what)
{
    terse_comm_t *comm = c->comm;
    terse__exec_fail(comm, TERSE_ERR_PROTOCOL, peer, comm->next_seq, 1,
                     "compressed allreduce step %llu: malformed %s code from rank %d",
                     (unsigned long long)c->steps, what, peer);
    return TERSE_ERR_PROTOCOL;
}

terse_status_t terse__compressed_encode(terse_compressed_t *c, const terse_codec_ops_t *codec,
                                        const float *u, const float *e_in, float *e_out, size_t n,
                                        void *code, size_t *len, terse_rng_t *rng)
{
    return terse__codec_encode_ef(codec, &c->cp, u, e_in, e_out, n, code, len, rng);
}

terse_status_t terse__compressed_decode(terse_compressed_t *c, const terse_codec_ops_t *codec,
                                        const void *code, size_t len, float *out, size_t n)
{
    if (codec->decode)
        return codec->decode(&c->cp, code, len, out, n);
    memset(out, 0, n * sizeof(float));
    return codec->decode_add(&c->cp, code, len, out, n);
}

void terse__compressed_set_seed(terse_compressed_t *c, int chunk)
{
    uint64_t v[3] = {c->p.seed, c->steps + 1, (uint64_t)(int64_t)chunk};
    c->cp.shared_seed = terse__hash64(v, sizeof(v), 0x72616e646bull);
}

terse_status_t terse__compressed_owner(terse_compressed_t *c, float *s)
{
    size_t n = c->len[c->r];
    if (c->p.op == TERSE_AVG)
        for (size_t i = 0; i < n; i++)
            s[i] /= (float)c->n;
    size_t len;
    char *code = c->down_codes + c->down_off[c->r];
    /* random-k: the sum lives on this step's shared positions; keep them, no second rescale */
    c->cp.no_rescale = c->down == c->up && c->up->shared_support;
    terse__compressed_set_seed(c, c->r);
    int fb = c->p.server_error_feedback;
    terse_status_t st = terse__compressed_encode(c, c->down, s, fb ? c->se : NULL, fb ? c->se_next : NULL,
                                                 n, code, &len, &c->rng_down);
    c->cp.no_rescale = 0;
    if (st == TERSE_OK && len != c->down_len[c->r])
        st = TERSE_ERR_PROTOCOL;
    return st;
}
