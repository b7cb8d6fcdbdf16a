/* request.c - start/test/wait/free life cycle of non-blocking collectives
 * and of plans (persistent requests, plan.c). */
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
    if (!req->persistent) /* a plan stays, inactive, for its next start */
        terse__sched_free(req);
    return st;
}

terse_status_t terse_request_free(terse_request_t *req)
{
    if (!req)
        return TERSE_ERR_INVALID_ARG;
    if (!req->done) {
        TERSE_WARN(COLL, "request_free: the request is still running (wait for it first)");
        return TERSE_ERR_BUSY;
    }
    if (req->persistent)
        for (terse_request_t **pp = &req->comm->plans; *pp; pp = &(*pp)->plan_next)
            if (*pp == req) {
                *pp = req->plan_next;
                break;
            }
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
    if (req->persistent) {
        /* a plan: built now, started by terse_start */
        terse_status_t st = out ? terse__sched_finish(req) : TERSE_ERR_INVALID_ARG;
        if (st != TERSE_OK) {
            terse__sched_free(req);
            return st;
        }
        req->done = 1;
        req->status = TERSE_OK;
        req->plan_next = req->comm->plans;
        req->comm->plans = req;
        *out = req;
        return TERSE_OK;
    }
    terse_status_t st = terse__exec_submit(req);
    if (st != TERSE_OK)
        return st;
    if (out) {
        *out = req;
        return TERSE_OK;
    }
    return terse_request_wait(req);
}
