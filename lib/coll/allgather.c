/* allgather.c - terse_allgather and terse_allgatherv: pipelined ring. */
#include "coll.h"
#include "../memreg.h"
#include "../log.h"

#include <stdlib.h>
#include <string.h>

static terse_status_t allgatherv_start(terse_comm_t *comm, terse_coll_t coll, const void *sendbuf,
                                       size_t sendcount, void *recvbuf, const size_t *counts,
                                       const size_t *displs, terse_dtype_t dtype,
                                       terse_request_t **out)
{
    int n = comm->size, r = comm->rank;
    size_t esz = terse_dtype_size(dtype);
    /* The layout must agree everywhere: fold it into the call's signature. */
    uint64_t sig = 0, total = 0;
    for (int i = 0; i < n; i++) {
        sig = sig * 1000003u + counts[i] + 7 * (displs ? displs[i] : total);
        total += counts[i];
    }
    terse_request_t *req;
    terse_status_t st = terse__sched_new(comm, coll, dtype, TERSE_SUM, -1,
                                         coll == TERSE_COLL_ALLGATHER ? sendcount : total,
                                         coll == TERSE_COLL_ALLGATHER ? 0 : sig, &req);
    if (st != TERSE_OK)
        return st;
    terse_blocks_t b;
    if (terse__blocks_v(&b, n, counts, displs, esz, comm->chunk)) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    char *own = (char *)recvbuf + b.off[r];
    int rc = 0;
    if (sendcount && own != (const char *)sendbuf)
        rc = terse__sched_add(req, TERSE_OPK_LOCAL, TERSE_ACT_MEMCPY, r, own, sendbuf,
                              sendcount * esz, -1, -1) < 0;
    if (!rc && n > 1)
        rc = terse__ring_allgather(req, &b, recvbuf, sendbuf, NULL, NULL);
    terse__blocks_free(&b);
    if (rc) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    terse__memreg_auto(comm->ctx, sendbuf, sendcount * esz);
    terse__memreg_auto(comm->ctx, recvbuf, (size_t)total * esz);
    return terse__coll_run(req, out);
}

terse_status_t terse_allgather_start(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                     size_t sendcount, terse_dtype_t dtype, terse_request_t **out)
{
    terse_status_t st = terse__coll_check(comm, dtype, 0, 0, sendbuf, recvbuf, sendcount);
    if (st != TERSE_OK)
        return st;
    size_t *counts = malloc(sizeof(size_t) * (size_t)comm->size);
    if (!counts)
        return TERSE_ERR_NO_MEMORY;
    for (int i = 0; i < comm->size; i++)
        counts[i] = sendcount;
    st = allgatherv_start(comm, TERSE_COLL_ALLGATHER, sendbuf, sendcount, recvbuf, counts, NULL,
                          dtype, out);
    free(counts);
    return st;
}

terse_status_t terse_allgather(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                               size_t sendcount, terse_dtype_t dtype)
{
    return terse_allgather_start(comm, sendbuf, recvbuf, sendcount, dtype, NULL);
}

terse_status_t terse_allgatherv(terse_comm_t *comm, const void *sendbuf, size_t sendcount,
                                void *recvbuf, const size_t *recvcounts, const size_t *displs,
                                terse_dtype_t dtype)
{
    terse_status_t st = terse__coll_check(comm, dtype, 0, 0, sendbuf, recvbuf, sendcount);
    if (st != TERSE_OK)
        return st;
    if (!recvcounts || recvcounts[comm->rank] != sendcount) {
        TERSE_WARN(COLL, "allgatherv: recvcounts[%d] must equal sendcount %zu", comm->rank, sendcount);
        return TERSE_ERR_INVALID_ARG;
    }
    size_t total = 0;
    for (int i = 0; i < comm->size; i++)
        total += recvcounts[i];
    if (total && !recvbuf)
        return TERSE_ERR_INVALID_ARG;
    return allgatherv_start(comm, TERSE_COLL_ALLGATHERV, sendbuf, sendcount, recvbuf, recvcounts,
                            displs, dtype, NULL);
}
