/*
 * exchange.c - a blocking ring allgather of variable-size byte blocks under
 * a signature of the caller's (communicator splits). An ordinary schedule:
 * credits, mismatch detection, timeouts and zero-copy sends come from the
 * executor.
 */
#include "coll.h"

#include <stdlib.h>

terse_status_t terse__allgather_bytes(terse_comm_t *comm, uint64_t sig, uint64_t step, char *buf,
                                      const size_t *off, const size_t *len)
{
    int n = comm->size;
    if (n == 1)
        return TERSE_OK;
    terse_request_t *req;
    terse_status_t st = terse__sched_new(comm, TERSE_COLL_COMPRESSED, TERSE_FLOAT32, TERSE_SUM, -1,
                                         step, sig ^ 0x6167u, &req);
    if (st != TERSE_OK)
        return st;
    terse_blocks_t b;
    int rc = terse__blocks_v(&b, n, len, off, 1, comm->chunk);
    if (rc == 0) {
        rc = terse__ring_allgather(req, &b, buf, buf + off[comm->rank], NULL, NULL);
        terse__blocks_free(&b);
    }
    if (rc) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    return terse__coll_run(req, NULL);
}
