/*
 * compressed_algo.c - the ring shape of a compressed allreduce step, still
 * run phase by phase (the allgather and two-phase shapes are schedules:
 * compressed_step.c).
 *
 * Every rank decodes the same codes in the same order, so outputs agree to
 * the last bit; the owner of a chunk is the only one that re-compresses it
 * (two-phase, ring), and the result reaches everyone as a code. The worker
 * residual goes to c->e_next, the owner's to c->se_next; the caller commits
 * them when the step succeeds.
 *
 * Input with NaN or infinity is not encoded: the rank sends poisoned codes
 * of the right length instead, every rank completes the step and returns
 * TERSE_ERR_INVALID_ARG, and the communicator stays usable.
 */
#include "compressed.h"
#include "../coll/coll.h"
#include "../log.h"

#include <string.h>

static terse_status_t poison_seen(terse_compressed_t *c, int peer)
{
    TERSE_WARN(COLL, "compressed allreduce step %llu: rank %d's input holds NaN or infinity",
               (unsigned long long)c->steps + 1, peer);
    return TERSE_ERR_INVALID_ARG;
}

/* Worker encode of chunk `chunk` (-1: the whole tensor): code = C(u + e).
 * Returns 1 when the values to encode are not finite - NaN or infinity in
 * the input, or a sum that overflowed (the codecs refuse nothing else, the
 * sizes were checked at create): the caller poisons its codes. */
static int encode_up(terse_compressed_t *c, int chunk, size_t off, size_t n, char *code, size_t want,
                     terse_status_t *st)
{
    const float *u = c->u + off;
    int fb = c->p.error_feedback;
    size_t len;
    terse__compressed_set_seed(c, chunk);
    *st = terse__compressed_encode(c, c->up, u, fb ? c->e + off : NULL, fb ? c->e_next + off : NULL, n,
                                   code, &len, &c->rng_up);
    if (*st == TERSE_ERR_INVALID_ARG) {
        *st = TERSE_OK;
        return 1;
    }
    if (*st == TERSE_OK && len != want)
        *st = TERSE_ERR_PROTOCOL;
    return 0;
}

/* The owner's chunk sum is in c->acc; re-compress it into the downlink slot
 * (or poison it) and allgather every owner's code into recvbuf. */
static terse_status_t downlink(terse_compressed_t *c, int poison, float *recvbuf)
{
    int n = c->n, r = c->r;
    terse_status_t st;
    /* an owner whose sum overflowed poisons its code like a bad input */
    if (!poison && (st = terse__compressed_owner(c, c->acc)) != TERSE_OK) {
        if (st != TERSE_ERR_INVALID_ARG)
            return st;
        TERSE_WARN(COLL, "compressed allreduce step %llu: the sum of chunk %d is not finite",
                   (unsigned long long)c->steps + 1, r);
        poison = 1;
    }
    if (poison)
        terse__codec_put_poison(c->down_codes + c->down_off[r], c->down->id, c->len[r], c->down_len[r]);
    st = terse__allgather_bytes(c->comm, c->sig ^ 0x646f776eull, c->steps, c->down_codes, c->down_off,
                                c->down_len);
    if (st != TERSE_OK)
        return st;
    for (int j = 0; j < n; j++)
        if (terse__codec_poisoned(c->down_codes + c->down_off[j], c->down_len[j]))
            return poison_seen(c, j);
    for (int j = 0; j < n; j++)
        if (terse__compressed_decode(c, c->down, c->down_codes + c->down_off[j], c->down_len[j],
                                     recvbuf + c->off[j], c->len[j]) != TERSE_OK)
            return terse__compressed_bad_code(c, j, c->down->name);
    return TERSE_OK;
}

terse_status_t terse__compressed_ring(terse_compressed_t *c, const float *u, float *recvbuf)
{
    int n = c->n, r = c->r;
    int right = (r + 1) % n, left = (r + n - 1) % n;
    float *p = c->e_next; /* partial sums are formed here (no worker feedback in a ring) */
    memcpy(p, u, c->count * sizeof(float));
    c->u = p;
    int poison = 0;
    terse_status_t st = TERSE_OK;
    int b = (r + n - 1) % n;
    for (int step = 0; step < n - 1; step++) {
        /* send block b (our partial sum of it), receive block rb from the left;
         * once anything was not finite, only poison goes on round the ring */
        if (!poison && encode_up(c, b, c->off[b], c->len[b], c->up_codes + c->up_off[b], c->up_len[b], &st)) {
            TERSE_WARN(COLL, "compressed allreduce step %llu: a partial sum of block %d is not finite",
                       (unsigned long long)c->steps + 1, b);
            poison = 1;
        }
        if (st != TERSE_OK)
            return st;
        if (poison)
            terse__codec_put_poison(c->up_codes + c->up_off[b], c->up->id, c->len[b], c->up_len[b]);
        int rb = (r + 2 * n - step - 2) % n;
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
    }
    memcpy(c->acc, p + c->off[r], c->len[r] * sizeof(float));
    return downlink(c, poison, recvbuf);
}
