/* transport.c - the table of built transports and TERSE_TRANSPORT selection. */
#include "transport.h"
#include "../lib/log.h"

#include <stdlib.h>
#include <string.h>

#ifdef TERSE_HAVE_VERBS
#include "verbs/verbs.h"
#endif

static const terse_tp_ops_t *const transports[] = {
#ifdef TERSE_HAVE_VERBS
    &terse_tp_verbs_ops,
#endif
    &terse_tp_tcp_ops,
};

const terse_tp_ops_t *terse__tp_select(const char *name, const terse_tp_params_t *params,
                                       terse_status_t *status)
{
    *status = TERSE_OK;
    if (strcmp(name, "auto") == 0) {
#ifdef TERSE_HAVE_VERBS
        struct sockaddr_in a;
        if (terse__verbs_pick_address(params, &a) == TERSE_OK) {
            TERSE_INFO(INIT, "TERSE_TRANSPORT=auto: an RDMA device is usable, using verbs");
            return &terse_tp_verbs_ops;
        }
        TERSE_INFO(INIT, "TERSE_TRANSPORT=auto: no usable RDMA device, using tcp");
#else
        (void)params;
        TERSE_INFO(INIT, "TERSE_TRANSPORT=auto: built without verbs, using tcp");
#endif
        return &terse_tp_tcp_ops;
    }
#ifdef TERSE_HAVE_VERBS
    if (strcmp(name, "verbs") == 0) {
        struct sockaddr_in a;
        if ((*status = terse__verbs_pick_address(params, &a)) != TERSE_OK) {
            TERSE_WARN(INIT, "TERSE_TRANSPORT=verbs: no active RDMA port with an IPv4 address%s%s "
                             "(ibv_devices / rdma link show; TERSE_IB_DEVICE, TERSE_IB_ADDR)",
                       params->ib_device && *params->ib_device ? " on " : "",
                       params->ib_device ? params->ib_device : "");
            return NULL;
        }
    }
#endif
    for (size_t i = 0; i < sizeof(transports) / sizeof(transports[0]); i++)
        if (strcmp(transports[i]->name, name) == 0)
            return transports[i];
    TERSE_WARN(INIT, "transport '%s' is not available in this build", name);
    *status = TERSE_ERR_UNSUPPORTED;
    return NULL;
}

void terse__tp_evq_push(terse_tp_evq_t *q, const terse_tp_event_t *ev)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 64;
        terse_tp_event_t *e = realloc(q->ev, cap * sizeof(*e));
        if (!e) {
            TERSE_WARN(NET, "out of memory queueing a transport event: dropped");
            return;
        }
        q->ev = e;
        q->cap = cap;
    }
    q->ev[q->n++] = *ev;
}

int terse__tp_evq_deliver(terse_tp_evq_t *q, terse_tp_event_cb cb, void *arg)
{
    size_t n = q->n;
    for (size_t i = 0; i < n; i++)
        cb(arg, &q->ev[i]);
    q->n = 0;
    return (int)n;
}

void terse__tp_evq_free(terse_tp_evq_t *q)
{
    free(q->ev);
    q->ev = NULL;
    q->n = q->cap = 0;
}

terse_status_t terse__tp_admit(const terse_tp_params_t *params, int wellformed, uint64_t secret_hash,
                               int rank, int size)
{
    if (!wellformed)
        return TERSE_ERR_PROTOCOL;
    if (secret_hash != params->secret_hash)
        return TERSE_ERR_AUTH;
    if (size != params->size || rank < 0 || rank >= size || rank == params->rank)
        return TERSE_ERR_AUTH;
    return TERSE_OK;
}
