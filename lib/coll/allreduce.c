/*
 * allreduce.c - terse_allreduce: algorithm choice, recursive doubling (small
 * messages) and the pipelined ring reduce-scatter + allgather (large ones).
 * Mid sizes use Rabenseifner (rabenseifner.c).
 */
#include "coll.h"
#include "../memreg.h"
#include "../log.h"

#include <stdlib.h>
#include <string.h>

/* Recursive doubling; non-powers of two fold the extra ranks in first. Each
 * pair reduces (lower rank's data op higher rank's), so both get identical bits. */
static int build_rd(terse_request_t *req, char *buf, size_t bytes, size_t chunk)
{
    terse_comm_t *comm = req->comm;
    int n = comm->size, r = comm->rank;
    int nch = (int)((bytes + chunk - 1) / chunk);
    int *last = malloc(sizeof(int) * (size_t)(nch ? nch : 1));
    int *snd = malloc(sizeof(int) * (size_t)(nch ? nch : 1));
    if (!last || !snd)
        goto oom;
    for (int c = 0; c < nch; c++)
        last[c] = -1;
#define CLEN(c) ((size_t)(c) * chunk + chunk <= bytes ? chunk : bytes - (size_t)(c) * chunk)
    terse_fold_t f = terse__fold(n, r);
    int vr = f.vr;
    if (vr < 0) {
        /* Extra rank: hand our data to r+1, get the result back. */
        for (int c = 0; c < nch; c++)
            if ((snd[c] = terse__sched_add(req, TERSE_OPK_SEND, 0, r + 1, NULL, buf + (size_t)c * chunk,
                                           CLEN(c), -1, -1)) < 0)
                goto oom;
        for (int c = 0; c < nch; c++)
            if (terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, r + 1, buf + (size_t)c * chunk,
                                 NULL, CLEN(c), snd[c], -1) < 0)
                goto oom;
        goto done;
    }
    if (r < 2 * f.rem) {
        for (int c = 0; c < nch; c++) {
            int op = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_REDUCE, r - 1,
                                      buf + (size_t)c * chunk, NULL, CLEN(c), -1, -1);
            if (op < 0)
                goto oom;
            req->ops[op].src_first = 1;
            last[c] = op;
        }
    }
    for (int mask = 1; mask < f.p2; mask <<= 1) {
        int partner = terse__fold_real(&f, vr ^ mask);
        for (int c = 0; c < nch; c++)
            if ((snd[c] = terse__sched_add(req, TERSE_OPK_SEND, 0, partner, NULL,
                                           buf + (size_t)c * chunk, CLEN(c), last[c], -1)) < 0)
                goto oom;
        for (int c = 0; c < nch; c++) {
            /* Overwrite our chunk only after the partner got the old value. */
            int op = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_REDUCE, partner,
                                      buf + (size_t)c * chunk, NULL, CLEN(c), snd[c], -1);
            if (op < 0)
                goto oom;
            req->ops[op].src_first = (uint8_t)(partner < r);
            last[c] = op;
        }
    }
    if (req->op == TERSE_AVG)
        for (int c = 0; c < nch; c++)
            if ((last[c] = terse__sched_add(req, TERSE_OPK_LOCAL, TERSE_ACT_SCALE, r,
                                            buf + (size_t)c * chunk, NULL, CLEN(c), last[c], -1)) < 0)
                goto oom;
    if (r < 2 * f.rem)
        for (int c = 0; c < nch; c++)
            if (terse__sched_add(req, TERSE_OPK_SEND, 0, r - 1, NULL, buf + (size_t)c * chunk,
                                 CLEN(c), last[c], -1) < 0)
                goto oom;
#undef CLEN
done:
    free(last);
    free(snd);
    return 0;
oom:
    free(last);
    free(snd);
    return -1;
}

static int build_ring(terse_request_t *req, const char *in, char *out, size_t count, size_t esz)
{
    terse_comm_t *comm = req->comm;
    terse_blocks_t b;
    int rc = -1;
    int *fin = NULL, *sent = NULL;
    if (terse__blocks_even(&b, comm->size, count, esz,
                            comm->chunk))
        goto out;
    fin = malloc(sizeof(int) * (size_t)(b.cbase[b.n] + 1));
    sent = malloc(sizeof(int) * (size_t)(b.cbase[b.n] + 1));
    if (!fin || !sent)
        goto out;
    char *own = out + b.off[comm->rank];
    if (terse__ring_reduce_scatter(req, &b, in, out, own, fin, sent) == 0 &&
        terse__ring_allgather(req, &b, out, own, fin, sent) == 0)
        rc = 0;
out:
    free(fin);
    free(sent);
    terse__blocks_free(&b);
    return rc;
}

typedef enum { ALGO_RD, ALGO_RABENSEIFNER, ALGO_RING } allreduce_algo_t;

/* TERSE_ALLREDUCE_ALGO wins; auto picks by size: latency-bound small messages
 * take recursive doubling (log2 n steps, full vector each), mid sizes
 * Rabenseifner (2 log2 n steps, ring bandwidth), large ones the pipelined ring
 * (2(n-1) steps, least work per byte). Every rank must choose the same, so
 * only arguments that agree everywhere enter. */
static allreduce_algo_t choose(const terse_comm_t *comm, size_t bytes, size_t count)
{
    const char *a = comm->cfg.allreduce_algo;
    if (!strcmp(a, "rd"))
        return ALGO_RD;
    if (!strcmp(a, "rabenseifner"))
        return ALGO_RABENSEIFNER;
    if (!strcmp(a, "ring"))
        return ALGO_RING;
    size_t rd = comm->cfg.rd_threshold;
    if (rd == 0) {
        /* recursive doubling moves log2(n) full vectors per rank: its edge
         * over the ring shrinks as n grows */
        int lg = 0;
        while ((1 << lg) < comm->size)
            lg++;
        rd = ((size_t)512 << 10) / (size_t)(lg ? lg : 1);
    }
    if (bytes <= rd || count < (size_t)comm->size)
        return ALGO_RD;
    return bytes <= comm->cfg.ring_threshold ? ALGO_RABENSEIFNER : ALGO_RING;
}

int terse__allreduce_build(terse_request_t *req, const void *sendbuf, void *recvbuf, size_t count,
                           uint64_t *algo_out)
{
    terse_comm_t *comm = req->comm;
    size_t esz = terse_dtype_size(req->dtype), bytes = count * esz;
    allreduce_algo_t algo = choose(comm, bytes, count);
    *algo_out = (uint64_t)algo;
    int rc = 0;
    if (count == 0) {
        /* nothing to move; the call still takes a sequence number */
    } else if (comm->size == 1) {
        terse__sched_prologue(req, recvbuf, sendbuf, bytes); /* AVG over one rank: the value itself */
    } else if (algo == ALGO_RING) {
        rc = build_ring(req, sendbuf, recvbuf, count, esz);
    } else {
        terse__sched_prologue(req, recvbuf, sendbuf, bytes);
        if (algo == ALGO_RD) {
            /* one step, nothing to overlap: the largest chunks cost least */
            rc = build_rd(req, recvbuf, bytes, comm->chunk - comm->chunk % esz);
        } else {
            rc = terse__build_rabenseifner(req, recvbuf, count, esz);
        }
    }
    return rc;
}

terse_status_t terse_allreduce_start(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                     size_t count, terse_dtype_t dtype, terse_op_t op,
                                     terse_request_t **out)
{
    terse_status_t st = terse__coll_check(comm, dtype, (int)op, 1, sendbuf, recvbuf, count);
    if (st != TERSE_OK)
        return st;
    size_t bytes = count * terse_dtype_size(dtype);
    terse_request_t *req;
    /* The algorithm is part of the signature: ranks configured differently
     * are reported as a mismatch rather than exchanging garbage. */
    uint64_t algo = (uint64_t)choose(comm, bytes, count);
    if ((st = terse__sched_new(comm, TERSE_COLL_ALLREDUCE, dtype, op, -1, count, algo, &req)) != TERSE_OK)
        return st;
    if (terse__allreduce_build(req, sendbuf, recvbuf, count, &algo)) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    terse__memreg_auto(comm->ctx, sendbuf, bytes);
    terse__memreg_auto(comm->ctx, recvbuf, bytes);
    return terse__coll_run(req, out);
}

terse_status_t terse_allreduce(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                               terse_dtype_t dtype, terse_op_t op)
{
    return terse_allreduce_start(comm, sendbuf, recvbuf, count, dtype, op, NULL);
}
