/*
 * reduce.c - terse_reduce: the reduction of every rank's input at one root,
 * over a binomial tree in root-relative ranks, pipelined by chunks. Each
 * rank adds its children's partial sums in a fixed order (nearest child
 * first), so the root's bits are the same from run to run.
 */
#include "coll.h"
#include "../log.h"
#include "../memreg.h"

#include <stdlib.h>
#include <string.h>

terse_status_t terse_reduce_start(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                  terse_dtype_t dtype, terse_op_t op, int root, terse_request_t **out)
{
    terse_status_t st = terse__coll_check(comm, dtype, (int)op, 1, sendbuf, sendbuf, count);
    if (st != TERSE_OK)
        return st;
    if (root < 0 || root >= comm->size) {
        TERSE_WARN(COLL, "reduce: root %d out of range [0, %d)", root, comm->size);
        return TERSE_ERR_INVALID_ARG;
    }
    if (comm->rank == root && count && !recvbuf) {
        TERSE_WARN(COLL, "reduce: NULL recvbuf at the root");
        return TERSE_ERR_INVALID_ARG;
    }
    terse_request_t *req;
    if ((st = terse__sched_new(comm, TERSE_COLL_REDUCE, dtype, op, root, count, 0, &req)) != TERSE_OK)
        return st;
    int n = comm->size, r = comm->rank, vr = (r - root + n) % n;
    size_t esz = terse_dtype_size(dtype), bytes = count * esz, chunk = comm->chunk - comm->chunk % esz;
    int nch = (int)((bytes + chunk - 1) / chunk);
    /* the partial sum: recvbuf at the root, scratch elsewhere; the input is
     * copied into it at every start */
    char *acc = r == root ? recvbuf : (req->scratch = bytes ? malloc(bytes) : NULL);
    int *last = malloc(sizeof(int) * (size_t)(nch ? nch : 1));
    int rc = (bytes && !acc) || !last;
    if (!rc)
        terse__sched_prologue(req, acc, sendbuf, bytes);
    for (int c = 0; c < nch && !rc; c++)
        last[c] = -1;
    int mask = 1;
    for (; mask < n && !rc && !(vr & mask); mask <<= 1) {
        int child = vr + mask;
        if (child >= n)
            continue;
        for (int c = 0; c < nch && !rc; c++) {
            size_t off = (size_t)c * chunk, len = bytes - off < chunk ? bytes - off : chunk;
            int o = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_REDUCE, (child + root) % n, acc + off, NULL, len,
                                     last[c], -1);
            rc |= o < 0;
            last[c] = o;
        }
    }
    if (!rc && vr != 0) { /* up to the parent */
        int parent = (vr - mask + root) % n;
        for (int c = 0; c < nch && !rc; c++) {
            size_t off = (size_t)c * chunk, len = bytes - off < chunk ? bytes - off : chunk;
            rc |= terse__sched_add(req, TERSE_OPK_SEND, TERSE_ACT_NONE, parent, NULL, acc + off, len, last[c], -1) < 0;
        }
    } else if (!rc && op == TERSE_AVG) {
        for (int c = 0; c < nch && !rc; c++) {
            size_t off = (size_t)c * chunk, len = bytes - off < chunk ? bytes - off : chunk;
            rc |= terse__sched_add(req, TERSE_OPK_LOCAL, TERSE_ACT_SCALE, r, acc + off, NULL, len, last[c], -1) < 0;
        }
    }
    free(last);
    if (rc) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    terse__memreg_auto(comm->ctx, acc, bytes);
    return terse__coll_run(req, out);
}

terse_status_t terse_reduce(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                            terse_dtype_t dtype, terse_op_t op, int root)
{
    return terse_reduce_start(comm, sendbuf, recvbuf, count, dtype, op, root, NULL);
}
