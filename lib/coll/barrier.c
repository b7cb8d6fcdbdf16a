/* barrier.c - terse_barrier: dissemination, ceil(log2 n) rounds of empty messages. */
#include "coll.h"

terse_status_t terse_barrier(terse_comm_t *comm)
{
    terse_status_t st = terse__coll_check(comm, TERSE_FLOAT32, 0, 0, NULL, NULL, 0);
    if (st != TERSE_OK)
        return st;
    terse_request_t *req;
    if ((st = terse__sched_new(comm, TERSE_COLL_BARRIER, TERSE_FLOAT32, TERSE_SUM, -1, 0, 0, &req)) != TERSE_OK)
        return st;
    int n = comm->size, r = comm->rank, prev = -1, sent = -1;
    for (int d = 1; d < n; d <<= 1) {
        /* Round k: tell r+d we arrived, once we heard from r-d in round k-1
         * and, through our own round k-1 send, from everyone before. */
        if ((sent = terse__sched_add(req, TERSE_OPK_SEND, 0, (r + d) % n, NULL, NULL, 0, prev, sent)) < 0 ||
            (prev = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, (r - d % n + n) % n, NULL,
                                     NULL, 0, -1, -1)) < 0) {
            terse__sched_free(req);
            return TERSE_ERR_NO_MEMORY;
        }
    }
    return terse__coll_run(req, NULL);
}
