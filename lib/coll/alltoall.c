/*
 * alltoall.c - terse_alltoall and terse_alltoallv: every rank sends block p
 * of its input to rank p, starting with its right neighbour so that no rank
 * is everyone's first target. Every pair exchanges at least one (possibly
 * empty) chunk, so a disagreement on a block's size is a mismatch on the
 * receiver, never a wait.
 */
#include "coll.h"
#include "../log.h"
#include "../memreg.h"

#include <stdlib.h>
#include <string.h>

static int add_blocks(terse_request_t *req, terse_opkind_t kind, int peer, char *buf, size_t bytes)
{
    size_t chunk = req->comm->chunk, off = 0;
    do {
        size_t len = bytes - off < chunk ? bytes - off : chunk;
        int o = kind == TERSE_OPK_SEND
                    ? terse__sched_add(req, kind, TERSE_ACT_NONE, peer, NULL, buf + off, len, -1, -1)
                    : terse__sched_add(req, kind, TERSE_ACT_COPY, peer, buf + off, NULL, len, -1, -1);
        if (o < 0)
            return -1;
        off += len;
    } while (off < bytes);
    return 0;
}

/* Where block p starts, in elements: its displacement, or packed. */
static size_t block_off(const size_t *counts, const size_t *displs, int p)
{
    size_t off = 0;
    if (displs)
        return displs[p];
    for (int q = 0; q < p; q++)
        off += counts[q];
    return off;
}

static terse_status_t alltoallv_start(terse_comm_t *comm, terse_coll_t coll, const void *sendbuf,
                                      const size_t *scounts, const size_t *sdispls, void *recvbuf,
                                      const size_t *rcounts, const size_t *rdispls, terse_dtype_t dtype,
                                      terse_request_t **out)
{
    int n = comm->size, r = comm->rank;
    size_t esz = terse_dtype_size(dtype), stotal = 0, rtotal = 0, send_end = 0;
    for (int p = 0; p < n; p++) {
        size_t so = sdispls ? sdispls[p] : stotal;
        stotal += scounts[p], rtotal += rcounts[p];
        if (so + scounts[p] > send_end)
            send_end = so + scounts[p]; /* the input's extent, for the in-place copy */
    }
    if (scounts[r] != rcounts[r]) {
        TERSE_WARN(COLL, "alltoallv: this rank sends itself %zu elements but receives %zu", scounts[r], rcounts[r]);
        return TERSE_ERR_INVALID_ARG;
    }
    if ((stotal && !sendbuf) || (rtotal && !recvbuf)) {
        TERSE_WARN(COLL, "alltoall: NULL buffer with %zu elements to send, %zu to receive", stotal, rtotal);
        return TERSE_ERR_INVALID_ARG;
    }
    terse_request_t *req;
    /* the v form's totals differ between ranks: only block sizes are checked */
    terse_status_t st = terse__sched_new(comm, coll, dtype, TERSE_SUM, -1,
                                         coll == TERSE_COLL_ALLTOALL ? scounts[0] : 0, 0, &req);
    if (st != TERSE_OK)
        return st;
    const char *src = sendbuf;
    int rc = 0;
    if (sendbuf == recvbuf && n > 1 && send_end) {
        /* in place: what goes out is copied aside at every start */
        if (!(req->scratch = malloc(send_end * esz))) {
            terse__sched_free(req);
            return TERSE_ERR_NO_MEMORY;
        }
        terse__sched_prologue(req, req->scratch, sendbuf, send_end * esz);
        src = req->scratch;
    }
    size_t own_s = block_off(scounts, sdispls, r), own_r = block_off(rcounts, rdispls, r);
    if (scounts[r] && ((char *)recvbuf + own_r * esz != src + own_s * esz))
        rc |= terse__sched_add(req, TERSE_OPK_LOCAL, TERSE_ACT_MEMCPY, r, (char *)recvbuf + own_r * esz,
                               src + own_s * esz, scounts[r] * esz, -1, -1) < 0;
    for (int k = 1; k < n && !rc; k++) {
        int p = (r + k) % n;
        rc |= add_blocks(req, TERSE_OPK_SEND, p, (char *)src + block_off(scounts, sdispls, p) * esz, scounts[p] * esz);
    }
    for (int k = 1; k < n && !rc; k++) {
        int p = (r - k + n) % n;
        rc |= add_blocks(req, TERSE_OPK_RECV, p, (char *)recvbuf + block_off(rcounts, rdispls, p) * esz,
                         rcounts[p] * esz);
    }
    if (rc) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    terse__memreg_auto(comm->ctx, src, send_end * esz);
    return terse__coll_run(req, out);
}

terse_status_t terse_alltoall_start(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                    terse_dtype_t dtype, terse_request_t **out)
{
    terse_status_t st = terse__coll_check(comm, dtype, 0, 0, sendbuf, recvbuf, count);
    if (st != TERSE_OK)
        return st;
    size_t *counts = malloc(sizeof(size_t) * (size_t)comm->size);
    if (!counts)
        return TERSE_ERR_NO_MEMORY;
    for (int i = 0; i < comm->size; i++)
        counts[i] = count;
    st = alltoallv_start(comm, TERSE_COLL_ALLTOALL, sendbuf, counts, NULL, recvbuf, counts, NULL, dtype, out);
    free(counts);
    return st;
}

terse_status_t terse_alltoall(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                              terse_dtype_t dtype)
{
    return terse_alltoall_start(comm, sendbuf, recvbuf, count, dtype, NULL);
}

terse_status_t terse_alltoallv_start(terse_comm_t *comm, const void *sendbuf, const size_t *sendcounts,
                                     const size_t *sdispls, void *recvbuf, const size_t *recvcounts,
                                     const size_t *rdispls, terse_dtype_t dtype, terse_request_t **out)
{
    terse_status_t st = terse__coll_check(comm, dtype, 0, 0, NULL, NULL, 0);
    if (st != TERSE_OK)
        return st;
    if (!sendcounts || !recvcounts) {
        TERSE_WARN(COLL, "alltoallv: NULL counts");
        return TERSE_ERR_INVALID_ARG;
    }
    return alltoallv_start(comm, TERSE_COLL_ALLTOALLV, sendbuf, sendcounts, sdispls, recvbuf, recvcounts, rdispls,
                           dtype, out);
}

terse_status_t terse_alltoallv(terse_comm_t *comm, const void *sendbuf, const size_t *sendcounts,
                               const size_t *sdispls, void *recvbuf, const size_t *recvcounts,
                               const size_t *rdispls, terse_dtype_t dtype)
{
    return terse_alltoallv_start(comm, sendbuf, sendcounts, sdispls, recvbuf, recvcounts, rdispls, dtype, NULL);
}
