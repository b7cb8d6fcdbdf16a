/* request.c - start/test/wait/free life cycle of non-blocking collectives
 * and of plans (persistent requests, plan.c). */
#include "coll/coll.h"
#include "log.h"
#include "net.h"
#include "progress.h"

/* The caller has seen the request end: its handle is free again. */
static void reap(terse_request_t *req)
{
    if (req->owner && *req->owner == req)
        *req->owner = NULL;
    req->owner = NULL;
    req->active = 0;
}

terse_status_t terse_request_test(terse_request_t *req, int *done)
{
    if (!req || !done)
        return TERSE_ERR_INVALID_ARG;
    terse_ctx_t *ctx = req->comm->ctx;
    terse__ctx_lock(ctx);
    if (!req->done && !ctx->thread_on) /* the thread does the work: a test only looks */
        terse__exec_progress(ctx, 0);
    *done = req->done;
    if (req->done)
        reap(req);
    terse_status_t st = req->done ? req->status : TERSE_IN_PROGRESS;
    terse__ctx_unlock(ctx);
    return st;
}

terse_status_t terse_request_wait(terse_request_t *req)
{
    if (!req)
        return TERSE_ERR_INVALID_ARG;
    terse_ctx_t *ctx = req->comm->ctx;
    terse__ctx_lock(ctx);
    terse__progress_until(ctx, &req->done);
    reap(req);
    terse_status_t st = req->status;
    if (!req->persistent) /* a plan stays, inactive, for its next start */
        terse__sched_free(req);
    terse__ctx_unlock(ctx);
    return st;
}

terse_status_t terse_request_free(terse_request_t *req)
{
    if (!req)
        return TERSE_ERR_INVALID_ARG;
    terse_ctx_t *ctx = req->comm->ctx;
    terse__ctx_lock(ctx);
    terse_status_t st = TERSE_OK;
    if (!req->done || req->active) {
        TERSE_WARN(COLL, "request_free: the request is still running (wait for it first)");
        st = TERSE_ERR_BUSY;
    } else {
        reap(req);
        if (req->persistent)
            for (terse_request_t **pp = &req->comm->plans; *pp; pp = &(*pp)->plan_next)
                if (*pp == req) {
                    *pp = req->plan_next;
                    break;
                }
        terse__sched_free(req);
    }
    terse__ctx_unlock(ctx);
    return st;
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
