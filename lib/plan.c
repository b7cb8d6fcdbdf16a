/*
 * plan.c - persistent collectives (MPI-4's MPI_Allreduce_init and friends):
 * terse_*_init builds the schedule once - ops, per-peer lists, peers,
 * registrations looked up - and terse_start runs it again on the buffers'
 * current contents; terse_request_test / wait complete a start without
 * releasing the plan, terse_request_free releases it.
 */
#include "coll/coll.h"
#include "log.h"
#include "progress.h"

/* The builders of the *_start calls, told that this request is a plan. */
#define PLAN(comm, call)                                  \
    do {                                                  \
        if (!(comm) || !req)                              \
            return TERSE_ERR_INVALID_ARG;                 \
        *req = NULL;                                      \
        (comm)->building_plan = 1;                        \
        terse_status_t st_ = (call);                      \
        (comm)->building_plan = 0;                        \
        return st_;                                       \
    } while (0)

terse_status_t terse_allreduce_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                    terse_dtype_t dtype, terse_op_t op, terse_request_t **req)
{
    PLAN(comm, terse_allreduce_start(comm, sendbuf, recvbuf, count, dtype, op, req));
}

terse_status_t terse_reduce_scatter_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t recvcount,
                                         terse_dtype_t dtype, terse_op_t op, terse_request_t **req)
{
    PLAN(comm, terse_reduce_scatter_start(comm, sendbuf, recvbuf, recvcount, dtype, op, req));
}

terse_status_t terse_allgather_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t sendcount,
                                    terse_dtype_t dtype, terse_request_t **req)
{
    PLAN(comm, terse_allgather_start(comm, sendbuf, recvbuf, sendcount, dtype, req));
}

terse_status_t terse_broadcast_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                    terse_dtype_t dtype, int root, terse_request_t **req)
{
    PLAN(comm, terse_broadcast_start(comm, sendbuf, recvbuf, count, dtype, root, req));
}

terse_status_t terse_reduce_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                 terse_dtype_t dtype, terse_op_t op, int root, terse_request_t **req)
{
    PLAN(comm, terse_reduce_start(comm, sendbuf, recvbuf, count, dtype, op, root, req));
}

terse_status_t terse_alltoall_init(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                   terse_dtype_t dtype, terse_request_t **req)
{
    PLAN(comm, terse_alltoall_start(comm, sendbuf, recvbuf, count, dtype, req));
}

terse_status_t terse_start(terse_request_t *req)
{
    if (!req)
        return TERSE_ERR_INVALID_ARG;
    if (!req->persistent) {
        TERSE_WARN(COLL, "terse_start: not a persistent request (make one with terse_*_init)");
        return TERSE_ERR_INVALID_ARG;
    }
    terse_ctx_t *ctx = req->comm->ctx;
    terse__ctx_lock(ctx); /* the recursive lock spans the submit: nobody sees the plan half rearmed */
    terse_status_t st = TERSE_OK;
    if (req->active) { /* running, or ended but not yet waited for: the same to the caller */
        TERSE_WARN(COLL, "terse_start: the plan is running already (wait for it first)");
        st = TERSE_ERR_BUSY;
    } else if (req->comm->error != TERSE_OK) {
        st = req->comm->error;
    } else {
        terse__sched_rearm(req);
        req->active = 1;
        st = terse__exec_submit(req);
        if (st != TERSE_OK)
            req->active = 0; /* refused: inactive again */
    }
    terse__ctx_unlock(ctx);
    return st;
}
