/* request.c - start/test/wait life cycle of non-blocking collectives. */
#include "coll/coll.h"
#include "log.h"
#include "net.h"

#include <sched.h>

terse_status_t terse_request_test(terse_request_t *req, int *done)
{
    if (!req || !done)
        return TERSE_ERR_INVALID_ARG;
    if (!req->done)
        terse__exec_progress(req->comm->ctx, 0);
    *done = req->done;
    return req->done ? req->status : TERSE_IN_PROGRESS;
}

terse_status_t terse_request_wait(terse_request_t *req)
{
    if (!req)
        return TERSE_ERR_INVALID_ARG;
    /* Poll briefly (yielding the core: ranks often outnumber cores), then
     * sleep in the transport between events; 100 ms slices keep the timeout
     * check responsive. */
    double spin_until = terse__now() + 1e-6 * req->comm->cfg.spin_us;
    while (!req->done) {
        if (terse__now() < spin_until) {
            terse__exec_progress(req->comm->ctx, 0);
            sched_yield();
        } else {
            terse__exec_progress(req->comm->ctx, 100);
        }
    }
    terse_status_t st = req->status;
    terse__sched_free(req);
    return st;
}

terse_status_t terse_request_free(terse_request_t *req)
{
    if (!req)
        return TERSE_ERR_INVALID_ARG;
    if (!req->done)
        return TERSE_ERR_BUSY;
    terse__sched_free(req);
    return TERSE_OK;
}

terse_status_t terse__coll_check(const terse_comm_t *comm, terse_dtype_t dtype, int op, int need_op,
                                 const void *a, const void *b, size_t count)
{
    if (!comm)
        return TERSE_ERR_INVALID_ARG;
    if (comm->error != TERSE_OK)
        return comm->error;
    if ((unsigned)dtype >= TERSE_DTYPE_COUNT) {
        TERSE_WARN(COLL, "invalid dtype %d", (int)dtype);
        return TERSE_ERR_INVALID_ARG;
    }
    if (need_op && (unsigned)op >= TERSE_OP_COUNT) {
        TERSE_WARN(COLL, "invalid op %d", op);
        return TERSE_ERR_INVALID_ARG;
    }
    if (count && (!a || !b)) {
        TERSE_WARN(COLL, "NULL buffer with count %zu", count);
        return TERSE_ERR_INVALID_ARG;
    }
    if (count > ((size_t)1 << 48) / terse_dtype_size(dtype)) {
        TERSE_WARN(COLL, "count %zu too large", count);
        return TERSE_ERR_INVALID_ARG;
    }
    return TERSE_OK;
}

terse_status_t terse__coll_run(terse_request_t *req, terse_request_t **out)
{
    terse_status_t st = terse__exec_submit(req);
    if (st != TERSE_OK)
        return st;
    if (out) {
        *out = req;
        return TERSE_OK;
    }
    return terse_request_wait(req);
}
