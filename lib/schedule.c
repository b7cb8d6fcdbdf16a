/*
 * schedule.c - building schedules: a request's ops, their per-peer lists
 * and the peers it talks to. Running them is executor.c's.
 */
#include "schedule.h"
#include "net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

terse_status_t terse__sched_new(terse_comm_t *comm, terse_coll_t coll, terse_dtype_t dtype,
                                terse_op_t op, int root, uint64_t count, uint64_t sig_extra,
                                terse_request_t **req_out)
{
    terse_request_t *req = calloc(1, sizeof(*req));
    if (!req)
        return TERSE_ERR_NO_MEMORY;
    req->comm = comm;
    req->coll = coll;
    req->dtype = dtype;
    req->op = op;
    req->root = root;
    req->count = count;
    req->persistent = comm->building_plan; /* its number is taken at submission (each start for a plan) */
    uint64_t h = terse__mix64(0, (uint64_t)coll);
    h = terse__mix64(h, (uint64_t)dtype);
    h = terse__mix64(h, (uint64_t)op);
    h = terse__mix64(h, (uint64_t)(int64_t)root);
    h = terse__mix64(h, count);
    req->sig = terse__mix64(h, sig_extra);
    req->status = TERSE_IN_PROGRESS;
    *req_out = req;
    return TERSE_OK;
}

int terse__sched_add(terse_request_t *req, terse_opkind_t kind, terse_action_t action, int peer,
                     void *dst, const void *src, size_t bytes, int dep0, int dep1)
{
    if (req->nops == req->cap) {
        int cap = req->cap ? 2 * req->cap : 64;
        terse_sched_op_t *ops = realloc(req->ops, (size_t)cap * sizeof(*ops));
        if (!ops)
            return -1;
        req->ops = ops;
        req->cap = cap;
    }
    terse_sched_op_t *o = &req->ops[req->nops];
    *o = (terse_sched_op_t){.kind = (uint8_t)kind, .action = (uint8_t)action, .peer = peer,
                            .dst = dst, .src = src, .bytes = bytes, .dep = {dep0, dep1}};
    return req->nops++;
}

int terse__sched_send_msg(terse_request_t *req, int peer, const void *src, size_t bytes)
{
    size_t chunk = req->comm->chunk, off = 0;
    int last = -1;
    do {
        size_t len = bytes - off < chunk ? bytes - off : chunk;
        last = terse__sched_add(req, TERSE_OPK_SEND, TERSE_ACT_NONE, peer, NULL, (const char *)src + off,
                                len, -1, -1);
        if (last < 0)
            return -1;
        req->ops[last].total = bytes;
        off += len;
    } while (off < bytes);
    return last;
}

void terse__sched_free(terse_request_t *req)
{
    if (!req)
        return;
    free(req->recv_chunk);
    free(req->ops);
    free(req->send_idx);
    free(req->send_off);
    free(req->send_cur);
    free(req->recv_idx);
    free(req->recv_off);
    free(req->recv_cur);
    free(req->local_idx);
    free(req->peers);
    free(req->scratch);
    free(req);
}

/* Bucket ops by peer (counting sort keeps schedule order within a peer). */
static int build_lists(terse_request_t *req, int kind, int **idx, int **off, int **cur)
{
    int n = req->comm->size;
    *off = calloc((size_t)n + 1, sizeof(int));
    *cur = calloc((size_t)n, sizeof(int));
    *idx = malloc(sizeof(int) * (size_t)(req->nops ? req->nops : 1));
    if (!*off || !*cur || !*idx)
        return -1;
    for (int i = 0; i < req->nops; i++)
        if (req->ops[i].kind == kind)
            (*off)[req->ops[i].peer + 1]++;
    for (int p = 0; p < n; p++)
        (*off)[p + 1] += (*off)[p];
    int *fill = *cur; /* temporarily used as insertion cursor */
    for (int i = 0; i < req->nops; i++)
        if (req->ops[i].kind == kind) {
            int p = req->ops[i].peer;
            (*idx)[(*off)[p] + fill[p]++] = i;
        }
    memset(fill, 0, sizeof(int) * (size_t)n);
    return 0;
}

int terse__sched_call(terse_request_t *req, terse_sched_call_fn fn, size_t idx, int dep0, int dep1)
{
    int o = terse__sched_add(req, TERSE_OPK_LOCAL, TERSE_ACT_CALL, req->comm->rank, NULL, NULL, idx, dep0, dep1);
    if (o >= 0)
        req->ops[o].call = fn;
    return o;
}

void terse__sched_gate(terse_request_t *req, int first, int gate)
{
    /* the builder's other ops wait for these, directly or not */
    for (int i = first; i < req->nops; i++)
        if (req->ops[i].dep[0] < 0)
            req->ops[i].dep[0] = gate;
}

void terse__sched_prologue(terse_request_t *req, void *dst, const void *src, size_t bytes)
{
    req->pre_dst = dst, req->pre_src = src, req->pre_bytes = bytes;
    if (!req->persistent && bytes && dst != src)
        memmove(dst, src, bytes);
}

void terse__sched_rearm(terse_request_t *req)
{
    terse_comm_t *comm = req->comm;
    for (int i = 0; i < req->nops; i++) {
        terse_sched_op_t *o = &req->ops[i];
        o->posted = o->done = 0;
        o->got = 0;
        if (o->kind == TERSE_OPK_RECV && o->action == TERSE_ACT_VARLEN)
            o->total = 0;
    }
    memset(req->send_cur, 0, sizeof(int) * (size_t)comm->size);
    memset(req->recv_cur, 0, sizeof(int) * (size_t)comm->size);
    memset(req->recv_chunk, 0, sizeof(int) * (size_t)comm->size);
    req->local_cur = 0;
    req->remaining = req->nops;
    req->done = req->cancelled = 0;
    req->status = TERSE_IN_PROGRESS;
    req->seq = comm->next_seq++;
    comm->stats.calls++;
    if (req->pre_bytes && req->pre_dst != req->pre_src)
        memmove(req->pre_dst, req->pre_src, req->pre_bytes);
}

terse_status_t terse__sched_finish(terse_request_t *req)
{
    if (req->built)
        return TERSE_OK;
    int n = req->comm->size;
    if (build_lists(req, TERSE_OPK_SEND, &req->send_idx, &req->send_off, &req->send_cur) ||
        build_lists(req, TERSE_OPK_RECV, &req->recv_idx, &req->recv_off, &req->recv_cur))
        return TERSE_ERR_NO_MEMORY;
    req->local_idx = malloc(sizeof(int) * (size_t)(req->nops ? req->nops : 1));
    req->recv_chunk = calloc((size_t)n, sizeof(int));
    req->peers = malloc(sizeof(int) * (size_t)n);
    if (!req->local_idx || !req->recv_chunk || !req->peers)
        return TERSE_ERR_NO_MEMORY;
    for (int i = 0; i < req->nops; i++) {
        if (req->ops[i].kind == TERSE_OPK_LOCAL)
            req->local_idx[req->nlocal++] = i;
        if (req->ops[i].kind == TERSE_OPK_RECV && req->ops[i].action == TERSE_ACT_VARLEN)
            req->has_varlen = 1;
    }
    for (int p = 0; p < n; p++)
        if (p != req->comm->rank && (req->send_off[p + 1] > req->send_off[p] || req->recv_off[p + 1] > req->recv_off[p]))
            req->peers[req->npeers++] = p;
    req->remaining = req->nops;
    req->built = 1;
    return TERSE_OK;
}
