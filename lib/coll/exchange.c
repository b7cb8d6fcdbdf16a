/*
 * exchange.c - byte movement for the compressed collectives: a pairwise
 * exchange (alltoall, or one ring hop) and a ring allgather of variable-size
 * byte blocks. Both are ordinary schedules, so credits, mismatch detection,
 * timeouts and zero-copy sends from registered memory come from the executor.
 */
#include "coll.h"

#include <stdlib.h>

terse_status_t terse__exchange(terse_comm_t *comm, uint64_t sig, uint64_t step,
                               const void *const *sbuf, const size_t *slen, void *const *rbuf,
                               const size_t *rlen)
{
    terse_request_t *req;
    terse_status_t st = terse__sched_new(comm, TERSE_COLL_COMPRESSED, TERSE_FLOAT32, TERSE_SUM, -1,
                                         step, sig, &req);
    if (st != TERSE_OK)
        return st;
    int n = comm->size, r = comm->rank;
    size_t chunk = comm->chunk;
    /* Start with the right neighbour so that no rank is everyone's first target. */
    for (int k = 1; k < n; k++) {
        int p = (r + k) % n;
        for (size_t o = 0; slen[p] && o < slen[p]; o += chunk) {
            size_t len = slen[p] - o < chunk ? slen[p] - o : chunk;
            if (terse__sched_add(req, TERSE_OPK_SEND, TERSE_ACT_NONE, p, NULL,
                                 (const char *)sbuf[p] + o, len, -1, -1) < 0)
                goto oom;
        }
    }
    for (int k = 1; k < n; k++) {
        int p = (r + n - k) % n;
        for (size_t o = 0; rlen[p] && o < rlen[p]; o += chunk) {
            size_t len = rlen[p] - o < chunk ? rlen[p] - o : chunk;
            if (terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, p, (char *)rbuf[p] + o, NULL,
                                 len, -1, -1) < 0)
                goto oom;
        }
    }
    return terse__coll_run(req, NULL);
oom:
    terse__sched_free(req);
    return TERSE_ERR_NO_MEMORY;
}

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
