/*
 * rabenseifner.c - allreduce as reduce-scatter by recursive halving plus
 * allgather by recursive doubling: the ring's bandwidth (each rank moves
 * 2(p-1)/p of the data) in 2 log2 p steps instead of 2(p-1). Rank counts
 * that are not powers of two fold their extra ranks in first, as in
 * recursive doubling. Each block is reduced by exactly one rank, so every
 * rank ends with the same bits.
 */
#include "coll.h"

#include <stdlib.h>

int terse__build_rabenseifner(terse_request_t *req, char *buf, size_t count, size_t esz)
{
    terse_comm_t *comm = req->comm;
    int n = comm->size, r = comm->rank;
    terse_fold_t f = terse__fold(n, r);
    int p2 = f.p2, rem = f.rem, vr = f.vr;
    terse_blocks_t b;
    if (terse__blocks_even(&b, p2, count, esz, comm->chunk))
        return -1;
    int total = b.cbase[p2];
    int *last = malloc(sizeof(int) * (size_t)(total + 1));
    int *sent = malloc(sizeof(int) * (size_t)(total + 1));
    int rc = -1;
    if (!last || !sent)
        goto out;
    for (int g = 0; g < total; g++)
        last[g] = sent[g] = -1;

/* Add one op per chunk of blocks [lo, hi); ACC records each op in arr[]. */
#define FOR_CHUNKS(lo, hi, body)                                                       \
    for (int blk = (lo); blk < (hi); blk++)                                            \
        for (int c = 0; c < terse__blocks_nchunks(&b, blk); c++) {                     \
            int g = b.cbase[blk] + c;                                                  \
            char *ptr = buf + b.off[blk] + (size_t)c * b.chunk;                        \
            size_t len = terse__chunk_len(&b, blk, c);                                 \
            (void)g;                                                                   \
            body                                                                       \
        }

    if (vr < 0) {
        /* Extra rank: hand over the whole vector, get the result back. */
        int op;
        FOR_CHUNKS(0, p2, {
            if ((op = terse__sched_add(req, TERSE_OPK_SEND, 0, r + 1, NULL, ptr, len, -1, -1)) < 0)
                goto out;
            sent[g] = op;
        })
        FOR_CHUNKS(0, p2, {
            if (terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, r + 1, ptr, NULL, len, sent[g], -1) < 0)
                goto out;
        })
        rc = 0;
        goto out;
    }
    if (r < 2 * rem) {
        int op;
        FOR_CHUNKS(0, p2, {
            if ((op = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_REDUCE, r - 1, ptr, NULL, len, -1, -1)) < 0)
                goto out;
            req->ops[op].src_first = 1;
            last[g] = op;
        })
    }

    /* Reduce-scatter by recursive halving: keep the half named by our bit,
     * send the other half to the partner, fold the partner's copy of ours. */
    int lo = 0, hi = p2;
    for (int mask = p2 / 2; mask >= 1; mask /= 2) {
        int partner = terse__fold_real(&f, vr ^ mask), mid = (lo + hi) / 2;
        int keep_lo = (vr & mask) ? mid : lo, keep_hi = (vr & mask) ? hi : mid;
        int give_lo = (vr & mask) ? lo : mid, give_hi = (vr & mask) ? mid : hi;
        int op;
        FOR_CHUNKS(give_lo, give_hi, {
            if ((op = terse__sched_add(req, TERSE_OPK_SEND, 0, partner, NULL, ptr, len, last[g], -1)) < 0)
                goto out;
            sent[g] = op;
        })
        FOR_CHUNKS(keep_lo, keep_hi, {
            if ((op = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_REDUCE, partner, ptr, NULL, len,
                                       last[g], -1)) < 0)
                goto out;
            req->ops[op].src_first = (uint8_t)(partner < r);
            last[g] = op;
        })
        lo = keep_lo;
        hi = keep_hi;
    }
    /* Block vr is complete here. */
    if (req->op == TERSE_AVG) {
        int op;
        FOR_CHUNKS(lo, hi, {
            if ((op = terse__sched_add(req, TERSE_OPK_LOCAL, TERSE_ACT_SCALE, r, ptr, NULL, len, last[g], -1)) < 0)
                goto out;
            last[g] = op;
        })
    }
    /* Allgather by recursive doubling: swap everything we hold with the partner. */
    for (int mask = 1; mask < p2; mask *= 2) {
        int partner = terse__fold_real(&f, vr ^ mask);
        int plo = (vr ^ mask) & ~(mask - 1), phi = plo + mask; /* the partner's range */
        int op;
        FOR_CHUNKS(lo, hi, {
            if (terse__sched_add(req, TERSE_OPK_SEND, 0, partner, NULL, ptr, len, last[g], -1) < 0)
                goto out;
        })
        FOR_CHUNKS(plo, phi, {
            /* the region was given away during the halving: that send must be out */
            if ((op = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, partner, ptr, NULL, len,
                                       sent[g], last[g])) < 0)
                goto out;
            last[g] = op;
        })
        lo = lo < plo ? lo : plo;
        hi = hi > phi ? hi : phi;
    }
    if (r < 2 * rem) {
        FOR_CHUNKS(0, p2, {
            if (terse__sched_add(req, TERSE_OPK_SEND, 0, r - 1, NULL, ptr, len, last[g], -1) < 0)
                goto out;
        })
    }
#undef FOR_CHUNKS
    rc = 0;
out:
    free(last);
    free(sent);
    terse__blocks_free(&b);
    return rc;
}
