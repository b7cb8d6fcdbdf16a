/*
 * compressed_algo.c - the three shapes of a compressed allreduce step.
 *
 * On entry c->e_next holds p = u + e (or u). Every rank decodes the same
 * codes in the same order, so outputs agree to the last bit; the owner of a
 * chunk is the only one that re-compresses it (two-phase, ring), and the
 * result reaches everyone as a code.
 *
 * Input with NaN or infinity is not encoded: the rank sends poisoned codes
 * of the right length instead, every rank completes the step and returns
 * TERSE_ERR_INVALID_ARG, and the communicator stays usable.
 */
#include "compressed.h"
#include "../coll/coll.h"
#include "../log.h"
#include "../net.h"

#include <string.h>

static int poisoned_input(terse_compressed_t *c, const float *p, size_t n)
{
    if (!terse__codec_nonfinite(p, n))
        return 0;
    TERSE_WARN(COLL, "compressed allreduce step %llu: this rank's input holds NaN or infinity",
               (unsigned long long)c->steps + 1);
    return 1;
}

static terse_status_t poison_seen(terse_compressed_t *c, int peer)
{
    TERSE_WARN(COLL, "compressed allreduce step %llu: rank %d's input holds NaN or infinity",
               (unsigned long long)c->steps + 1, peer);
    return TERSE_ERR_INVALID_ARG;
}

/* Worker encode of p[0..n) into code (expected size want), or poison. */
static terse_status_t encode_up(terse_compressed_t *c, int chunk, float *p, size_t n, char *code,
                                size_t want, int poison, int feedback)
{
    if (poison) {
        terse__codec_put_poison(code, c->up->id, n, want);
        return TERSE_OK;
    }
    terse__compressed_set_seed(c, chunk);
    size_t len;
    terse_status_t st =
        terse__compressed_encode_fb(c, c->up, p, n, code, &len, &c->rng_up, feedback);
    return st == TERSE_OK && len != want ? TERSE_ERR_PROTOCOL : st;
}

/* out[0..n) = decode(code), or 0 when the code is malformed. */
static int decode_into(terse_compressed_t *c, const terse_codec_ops_t *codec, const char *code,
                       size_t len, float *out, size_t n)
{
    memset(out, 0, n * sizeof(float));
    return codec->decode_add(&c->cp, code, len, out, n) == TERSE_OK;
}

static void scale_avg(terse_compressed_t *c, float *v, size_t n)
{
    if (c->p.op == TERSE_AVG)
        for (size_t i = 0; i < n; i++)
            v[i] /= (float)c->n;
}

terse_status_t terse__compressed_allgather(terse_compressed_t *c, float *recvbuf)
{
    int n = c->n, r = c->r;
    size_t d = c->count;
    float *p = c->e_next;
    int poison = poisoned_input(c, p, d);
    terse_status_t st = encode_up(c, -1, p, d, c->in_codes + c->in_off[r], c->in_len[r], poison,
                                  c->p.error_feedback);
    if (st != TERSE_OK)
        return st;
    st = terse__allgather_bytes(c->comm, c->sig, c->steps, c->in_codes, c->in_off, c->in_len);
    if (st != TERSE_OK)
        return st;
    for (int i = 0; i < n; i++)
        if (terse__codec_poisoned(c->in_codes + c->in_off[i], c->in_len[i]))
            return poison_seen(c, i);
    memset(recvbuf, 0, d * sizeof(float));
    for (int i = 0; i < n; i++)
        if (c->up->decode_add(&c->cp, c->in_codes + c->in_off[i], c->in_len[i], recvbuf, d) != TERSE_OK)
            return terse__compressed_bad_code(c, i, c->up->name);
    scale_avg(c, recvbuf, d);
    return TERSE_OK;
}

/* The owner's chunk sum is in s (len[r]); re-compress it into the downlink
 * slot (or poison it) and allgather every owner's code into recvbuf. */
static terse_status_t downlink(terse_compressed_t *c, float *s, int poison, float *recvbuf)
{
    int n = c->n, r = c->r;
    terse_status_t st;
    if (poison) {
        terse__codec_put_poison(c->down_codes + c->down_off[r], c->down->id, c->len[r],
                                c->down_len[r]);
    } else if ((st = terse__compressed_owner(c, s)) != TERSE_OK) {
        return st;
    }
    st = terse__allgather_bytes(c->comm, c->sig ^ 0x646f776eull, c->steps, c->down_codes,
                                c->down_off, c->down_len);
    if (st != TERSE_OK)
        return st;
    for (int j = 0; j < n; j++)
        if (terse__codec_poisoned(c->down_codes + c->down_off[j], c->down_len[j]))
            return poison_seen(c, j);
    for (int j = 0; j < n; j++)
        if (!decode_into(c, c->down, c->down_codes + c->down_off[j], c->down_len[j],
                         recvbuf + c->off[j], c->len[j]))
            return terse__compressed_bad_code(c, j, c->down->name);
    return TERSE_OK;
}

terse_status_t terse__compressed_two_phase(terse_compressed_t *c, float *recvbuf)
{
    int n = c->n, r = c->r;
    float *p = c->e_next;
    int poison = poisoned_input(c, p, c->count);
    terse_status_t st;
    for (int j = 0; j < n; j++)
        if ((st = encode_up(c, j, p + c->off[j], c->len[j], c->up_codes + c->up_off[j], c->up_len[j],
                            poison, c->p.error_feedback)) != TERSE_OK)
            return st;
    if (n > 1) {
        const void *sbuf[n];
        void *rbuf[n];
        size_t slen[n], rlen[n];
        for (int j = 0; j < n; j++) {
            sbuf[j] = c->up_codes + c->up_off[j];
            slen[j] = j == r ? 0 : c->up_len[j];
            rbuf[j] = c->in_codes + c->in_off[j];
            rlen[j] = j == r ? 0 : c->in_len[j];
        }
        if ((st = terse__exchange(c->comm, c->sig, c->steps, sbuf, slen, rbuf, rlen)) != TERSE_OK)
            return st;
    }
    /* Sum the chunk we own in rank order (our own code from the uplink area). */
    float *s = c->se_next;
    size_t own = c->len[r];
    memset(s, 0, own * sizeof(float));
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const char *code = i == r ? c->up_codes + c->up_off[r] : c->in_codes + c->in_off[i];
        size_t len = i == r ? c->up_len[r] : c->in_len[i];
        if (terse__codec_poisoned(code, len))
            bad = 1;
        else if (!bad && c->up->decode_add(&c->cp, code, len, s, own) != TERSE_OK)
            return terse__compressed_bad_code(c, i, c->up->name);
    }
    return downlink(c, s, bad, recvbuf);
}

terse_status_t terse__compressed_ring(terse_compressed_t *c, float *recvbuf)
{
    int n = c->n, r = c->r;
    int right = (r + 1) % n, left = (r + n - 1) % n;
    float *p = c->e_next; /* partial sums are formed in place */
    int poison = poisoned_input(c, p, c->count);
    terse_status_t st;
    int b = (r + n - 1) % n;
    if (n > 1 && (st = encode_up(c, b, p + c->off[b], c->len[b], c->up_codes + c->up_off[b],
                                 c->up_len[b], poison, 0)) != TERSE_OK)
        return st;
    for (int step = 0; step < n - 1; step++) {
        int rb = (r + 2 * n - step - 2) % n; /* block arriving from the left */
        const void *sbuf[n];
        void *rbuf[n];
        size_t slen[n], rlen[n];
        memset(slen, 0, sizeof(slen));
        memset(rlen, 0, sizeof(rlen));
        sbuf[right] = c->up_codes + c->up_off[b];
        slen[right] = c->up_len[b];
        rbuf[left] = c->in_codes + c->in_off[rb];
        rlen[left] = c->in_len[rb];
        if ((st = terse__exchange(c->comm, c->sig, c->steps, sbuf, slen, rbuf, rlen)) != TERSE_OK)
            return st;
        const char *code = c->in_codes + c->in_off[rb];
        if (terse__codec_poisoned(code, c->in_len[rb]))
            poison = 1;
        else if (c->up->decode_add(&c->cp, code, c->in_len[rb], p + c->off[rb], c->len[rb]) != TERSE_OK)
            return terse__compressed_bad_code(c, left, c->up->name);
        b = rb;
        if (step < n - 2 && (st = encode_up(c, b, p + c->off[b], c->len[b], c->up_codes + c->up_off[b],
                                            c->up_len[b], poison, 0)) != TERSE_OK)
            return st;
    }
    memcpy(c->se_next, p + c->off[r], c->len[r] * sizeof(float));
    return downlink(c, c->se_next, poison, recvbuf);
}
