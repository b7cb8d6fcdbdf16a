/*
 * broadcast.c - terse_broadcast over a pipelined tree: a binomial tree for
 * small messages (log n hops), a chain for large ones (each link carries the
 * data once, so bandwidth does not shrink with log n).
 */
#include "coll.h"
#include "../memreg.h"
#include "../log.h"

#include <stdlib.h>
#include <string.h>

terse_status_t terse_broadcast_start(terse_comm_t *comm, const void *sendbuf, void *recvbuf,
                                     size_t count, terse_dtype_t dtype, int root,
                                     terse_request_t **out)
{
    terse_status_t st = terse__coll_check(comm, dtype, 0, 0, recvbuf, recvbuf, count);
    if (st != TERSE_OK)
        return st;
    if (root < 0 || root >= comm->size) {
        TERSE_WARN(COLL, "broadcast: root %d out of range [0, %d)", root, comm->size);
        return TERSE_ERR_INVALID_ARG;
    }
    if (comm->rank == root && count && !sendbuf)
        return TERSE_ERR_INVALID_ARG;
    terse_request_t *req;
    if ((st = terse__sched_new(comm, TERSE_COLL_BROADCAST, dtype, TERSE_SUM, root, count, 0, &req)) != TERSE_OK)
        return st;
    int n = comm->size, r = comm->rank, vr = (r - root + n) % n;
    size_t esz = terse_dtype_size(dtype), bytes = count * esz;
    size_t chunk = comm->chunk;
    chunk -= chunk % esz;
    int nch = (int)((bytes + chunk - 1) / chunk);
    int chain = bytes > 4 * comm->chunk;
    /* Tree shape in root-relative ranks. */
    int parent = -1, children[64], nchild = 0;
    if (chain) {
        if (vr > 0)
            parent = vr - 1;
        if (vr + 1 < n)
            children[nchild++] = vr + 1;
    } else {
        int hb = 1;
        while (hb <= vr)
            hb <<= 1; /* first power of two above vr */
        if (vr > 0)
            parent = vr - (hb >> 1);
        /* farthest child first: it heads the largest subtree */
        int k = hb;
        while (k < n)
            k <<= 1;
        for (k >>= 1; k >= hb && k > 0; k >>= 1)
            if (vr + k < n)
                children[nchild++] = vr + k;
    }
    int rc = 0;
    const char *src = r == root ? sendbuf : recvbuf;
    if (r == root && bytes && sendbuf != recvbuf)
        rc |= terse__sched_add(req, TERSE_OPK_LOCAL, TERSE_ACT_MEMCPY, r, recvbuf, sendbuf, bytes, -1, -1) < 0;
    for (int c = 0; c < nch && !rc; c++) {
        size_t off = (size_t)c * chunk, len = bytes - off < chunk ? bytes - off : chunk;
        int got = -1;
        if (parent >= 0)
            rc |= (got = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, (parent + root) % n,
                                          (char *)recvbuf + off, NULL, len, -1, -1)) < 0;
        for (int i = 0; i < nchild && !rc; i++)
            rc |= terse__sched_add(req, TERSE_OPK_SEND, 0, (children[i] + root) % n, NULL, src + off,
                                   len, got, -1) < 0;
    }
    if (rc) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    terse__memreg_auto(comm->ctx, src, bytes);
    terse__memreg_auto(comm->ctx, recvbuf, bytes);
    return terse__coll_run(req, out);
}

terse_status_t terse_broadcast(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                               terse_dtype_t dtype, int root)
{
    return terse_broadcast_start(comm, sendbuf, recvbuf, count, dtype, root, NULL);
}
