/* reduce_scatter.c - terse_reduce_scatter: the ring reduce-scatter phase alone. */
#include "coll.h"
#include "../memreg.h"

#include <stdlib.h>
#include <string.h>

terse_status_t terse_reduce_scatter_start(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                          size_t recvcount, terse_dtype_t dtype, terse_op_t op,
                                          terse_request_t **out)
{
    terse_status_t st = terse__coll_check(comm, dtype, (int)op, 1, sendbuf, recvbuf, recvcount);
    if (st != TERSE_OK)
        return st;
    terse_request_t *req;
    if ((st = terse__sched_new(comm, TERSE_COLL_REDUCE_SCATTER, dtype, op, -1, recvcount, 0, &req)) != TERSE_OK)
        return st;
    size_t esz = terse_dtype_size(dtype), blk = recvcount * esz;
    int n = comm->size, r = comm->rank;
    int rc = 0;
    if (recvcount == 0) {
    } else if (n == 1) {
        terse__sched_prologue(req, recvbuf, sendbuf, blk); /* AVG over one rank: the value itself */
    } else {
        terse_blocks_t b;
        int *fin = NULL, *sent = NULL;
        rc = -1;
        const char *in = sendbuf;
        /* Partial sums need a buffer laid out like the input. In the NCCL
         * in-place form (recvbuf is our block of sendbuf) the input itself is
         * the caller's to overwrite; otherwise use scratch. */
        char *acc = (char *)recvbuf == in + (size_t)r * blk ? (char *)sendbuf : NULL;
        if (!acc)
            acc = req->scratch = malloc(blk * (size_t)n);
        if (acc && terse__blocks_even(&b, n, recvcount * (size_t)n, esz, comm->chunk) == 0) {
            fin = malloc(sizeof(int) * (size_t)(b.cbase[n] + 1));
            sent = malloc(sizeof(int) * (size_t)(b.cbase[n] + 1));
            if (fin && sent)
                rc = terse__ring_reduce_scatter(req, &b, in, acc, recvbuf, fin, sent);
            terse__blocks_free(&b);
        }
        free(fin);
        free(sent);
    }
    if (rc) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    terse__memreg_auto(comm->ctx, sendbuf, blk * (size_t)n);
    terse__memreg_auto(comm->ctx, recvbuf, blk);
    return terse__coll_run(req, out);
}

terse_status_t terse_reduce_scatter(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                    size_t recvcount, terse_dtype_t dtype, terse_op_t op)
{
    return terse_reduce_scatter_start(comm, sendbuf, recvbuf, recvcount, dtype, op, NULL);
}
