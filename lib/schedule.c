/*
 * sched.c - the schedule executor: issues chunk sends when their
 * dependencies are met and the peer has a free slot, consumes arrived slots
 * into user memory, runs local steps, and detects mismatches, dead peers and
 * timeouts. Nothing here knows which algorithm built the schedule.
 */
#include "schedule.h"
#include "dtype.h"
#include "memreg.h"
#include "log.h"
#include "net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *coll_names[] = {"?", "allreduce", "reduce_scatter", "allgather",
                                   "allgatherv", "broadcast", "barrier", "compressed"};

static uint64_t mix64(uint64_t h, uint64_t v)
{
    return terse__hash64(&v, sizeof(v), h);
}

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
    req->seq = comm->next_seq++;
    uint64_t h = mix64(0, (uint64_t)coll);
    h = mix64(h, (uint64_t)dtype);
    h = mix64(h, (uint64_t)op);
    h = mix64(h, (uint64_t)(int64_t)root);
    h = mix64(h, count);
    req->sig = mix64(h, sig_extra);
    req->status = TERSE_IN_PROGRESS;
    comm->stats.calls++;
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

static void request_finish(terse_comm_t *comm, terse_request_t *req, terse_status_t st)
{
    /* unlink */
    terse_request_t **pp = &comm->req_head, *prev = NULL;
    while (*pp && *pp != req) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = req->next;
        if (comm->req_tail == req)
            comm->req_tail = prev;
    }
    req->next = NULL;
    req->done = 1;
    req->status = st;
    free(req->scratch);
    req->scratch = NULL;
    if (req->freed_by_user)
        terse__sched_free(req);
}

terse_status_t terse__sched_commit(terse_request_t *req)
{
    terse_comm_t *comm = req->comm;
    if (comm->error != TERSE_OK) {
        terse_status_t st = comm->error;
        terse__sched_free(req);
        return st;
    }
    if (build_lists(req, TERSE_OPK_SEND, &req->send_idx, &req->send_off, &req->send_cur) ||
        build_lists(req, TERSE_OPK_RECV, &req->recv_idx, &req->recv_off, &req->recv_cur)) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    req->local_idx = malloc(sizeof(int) * (size_t)(req->nops ? req->nops : 1));
    req->recv_chunk = calloc((size_t)req->comm->size, sizeof(int));
    if (!req->local_idx || !req->recv_chunk) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    for (int i = 0; i < req->nops; i++) {
        if (req->ops[i].kind == TERSE_OPK_LOCAL)
            req->local_idx[req->nlocal++] = i;
        if (req->ops[i].kind == TERSE_OPK_RECV && req->ops[i].action == TERSE_ACT_VARLEN)
            req->has_varlen = 1;
    }
    req->remaining = req->nops;
    if (comm->req_tail)
        comm->req_tail->next = req;
    else
        comm->req_head = req;
    comm->req_tail = req;
    comm->last_activity = terse__now();
    if (req->nops == 0)
        request_finish(comm, req, TERSE_OK);
    else
        terse__comm_progress(comm, 0);
    return TERSE_OK;
}

static inline int deps_done(const terse_request_t *req, const terse_sched_op_t *o)
{
    return (o->dep[0] < 0 || req->ops[o->dep[0]].done) && (o->dep[1] < 0 || req->ops[o->dep[1]].done);
}

static inline void op_done(terse_request_t *req, terse_sched_op_t *o)
{
    o->done = 1;
    req->remaining--;
}

static terse_request_t *find_seq(terse_comm_t *comm, uint32_t seq)
{
    for (terse_request_t *r = comm->req_head; r; r = r->next)
        if (r->seq == seq)
            return r;
    return NULL;
}

/* Post every send that may go: in order per peer, one request at a time. */
static int issue_sends(terse_comm_t *comm)
{
    int moved = 0;
    for (int p = 0; p < comm->size; p++) {
        if (p == comm->rank)
            continue;
        terse_chan_t *ch = &comm->chans[p];
        for (terse_request_t *req = comm->req_head; req; req = req->next) {
            int *cur = &req->send_cur[p];
            int end = req->send_off[p + 1] - req->send_off[p];
            while (*cur < end && ch->sent - ch->credited < (uint64_t)comm->nslots) {
                int oi = req->send_idx[req->send_off[p] + *cur];
                terse_sched_op_t *o = &req->ops[oi];
                if (!deps_done(req, o))
                    break;
                if (ch->bye || ch->lost) {
                    terse__comm_fail(comm, TERSE_ERR_PEER_FAILED, p, req->seq, 1,
                                     "rank %d is gone (%s) but %s #%u still sends to it", p,
                                     ch->bye ? "destroyed its communicator" : "connection lost",
                                     coll_names[req->coll], req->seq);
                    return moved; /* the request list changed under us */
                }
                uint32_t slot = (uint32_t)(ch->sent % (uint64_t)comm->nslots);
                terse_wire_hdr_t *h =
                    (terse_wire_hdr_t *)(comm->hdr_region +
                                         ((size_t)p * (size_t)comm->nslots + slot) * TERSE_HDR_SIZE);
                *h = (terse_wire_hdr_t){.magic = TERSE_WIRE_MAGIC, .seq = req->seq, .sig = req->sig,
                                        .stream = (uint32_t)*cur, .bytes = (uint32_t)o->bytes,
                                        .src = comm->rank, .coll = (uint8_t)req->coll,
                                        .dtype = (uint8_t)req->dtype, .op = (uint8_t)req->op,
                                        .root = req->root, .count = req->count,
                                        .total = o->total};
                /* registered source memory goes out zero-copy */
                terse_tp_mr_t *src_mr = o->bytes ? terse__memreg_find(comm, o->src, o->bytes) : NULL;
                terse_tp_iov_t iov[2] = {{h, TERSE_HDR_SIZE, comm->hdr_mr}, {o->src, o->bytes, src_mr}};
                uint64_t off = ((size_t)comm->rank * (size_t)comm->nslots + slot) * comm->slot_stride;
                terse_status_t st = comm->tp_ops->write_notify(
                    comm->tp, p, iov, o->bytes ? 2 : 1, comm->rkeys + (size_t)p * TERSE_TP_RKEY_MAX,
                    off, TERSE_IMM(TERSE_IMM_DATA, slot), ((uint64_t)req->seq << 32) | (uint32_t)oi);
                if (st != TERSE_OK) {
                    terse__comm_fail(comm, st, p, req->seq, 1, "write to rank %d failed: %s", p,
                                     terse_strerror(st));
                    return moved;
                }
                o->posted = 1;
                ch->sent++;
                comm->stats.bytes_sent += o->bytes;
                (*cur)++;
                moved++;
            }
            if (*cur < end)
                break; /* later requests wait their turn on this peer */
        }
    }
    return moved;
}

static void describe(char *buf, size_t len, int coll, int dtype, int op, uint64_t count, uint32_t seq)
{
    snprintf(buf, len, "%s #%u (count %llu, %s, %s)", coll >= 1 && coll <= TERSE_COLL_COMPRESSED ? coll_names[coll] : "?",
             seq, (unsigned long long)count, terse_dtype_name((terse_dtype_t)dtype),
             terse_op_name((terse_op_t)op));
}

/* Apply one arrived chunk to its receive op. */
static void apply_recv(terse_request_t *req, terse_sched_op_t *o, const char *payload)
{
    size_t esz = terse_dtype_size(req->dtype);
    switch (o->action) {
    case TERSE_ACT_COPY:
        if (o->bytes) /* an empty op may have no buffer */
            memcpy(o->dst, payload, o->bytes);
        break;
    case TERSE_ACT_REDUCE3:
        terse__reduce3(req->dtype, req->op, o->dst, o->src, payload, o->bytes / esz, o->src_first);
        break;
    case TERSE_ACT_REDUCE:
        terse__reduce(req->dtype, req->op, o->dst, payload, o->bytes / esz, o->src_first);
        break;
    default:
        break;
    }
    if (o->finalize && req->op == TERSE_AVG)
        terse__scale_avg(req->dtype, o->dst, o->bytes / esz, req->comm->size);
}

/* Consume the arrived slots of one peer, oldest first. Returns chunks consumed,
 * or -1 when an error changed the request list. */
static int consume_peer(terse_comm_t *comm, int p)
{
    terse_chan_t *ch = &comm->chans[p];
    int moved = 0;
    while (ch->consumed < ch->arrived) {
        uint32_t slot = (uint32_t)(ch->consumed % (uint64_t)comm->nslots);
        char *base = comm->recv_region + ((size_t)p * (size_t)comm->nslots + slot) * comm->slot_stride;
        terse_wire_hdr_t *h = (terse_wire_hdr_t *)base;
        if (h->magic != TERSE_WIRE_MAGIC || h->src != p || h->bytes > comm->chunk) {
            terse__comm_fail(comm, TERSE_ERR_PROTOCOL, p, comm->req_head ? comm->req_head->seq : comm->next_seq, 1,
                             "malformed chunk header from rank %d (magic %08x, src %d, %u bytes)",
                             p, h->magic, h->src, h->bytes);
            return -1;
        }
        terse_request_t *req = find_seq(comm, h->seq);
        if (!req) {
            if (comm->error != TERSE_OK && terse__seq_ge(h->seq, comm->error_seq)) {
                ch->consumed++; /* data for a call that already failed: drop it */
                ch->credits_owed++;
                continue;
            }
            if (terse__seq_ge(h->seq, comm->next_seq))
                break; /* the peer is ahead of us: keep it until we start that call */
            char theirs[128];
            describe(theirs, sizeof(theirs), h->coll, h->dtype, h->op, h->count, h->seq);
            terse__comm_fail(comm, TERSE_ERR_MISMATCH, p, comm->req_head ? comm->req_head->seq : comm->next_seq, 1,
                             "rank %d sent data for %s, which this rank has already completed "
                             "(ranks called different collectives or counts)", p, theirs);
            return -1;
        }
        int *cur = &req->recv_cur[p];
        int end = req->recv_off[p + 1] - req->recv_off[p];
        terse_sched_op_t *o = *cur < end ? &req->ops[req->recv_idx[req->recv_off[p] + *cur]] : NULL;
        int varlen = o && o->action == TERSE_ACT_VARLEN;
        if (h->sig != req->sig || !o || h->stream != (uint32_t)req->recv_chunk[p] ||
            (varlen ? h->bytes > h->total - o->got || (o->got && h->total != o->total)
                    : h->bytes != o->bytes)) {
            char theirs[128], ours[128];
            describe(theirs, sizeof(theirs), h->coll, h->dtype, h->op, h->count, h->seq);
            describe(ours, sizeof(ours), req->coll, req->dtype, req->op, req->count, req->seq);
            terse__comm_fail(comm, TERSE_ERR_MISMATCH, p, req->seq, 1,
                             "mismatched collectives: rank %d called %s%s, rank %d called %s", p,
                             theirs, h->sig == req->sig ? " with other sizes or root" : "",
                             comm->rank, ours);
            return -1;
        }
        if (!deps_done(req, o))
            break;
        if (varlen) {
            if (o->got == 0 && !o->posted) {
                /* first chunk: the message's size, then its buffer */
                if (h->total > o->bytes) {
                    terse__comm_fail(comm, TERSE_ERR_PROTOCOL, p, req->seq, 1,
                                     "rank %d sent a %llu-byte message where at most %zu fit", p,
                                     (unsigned long long)h->total, o->bytes);
                    return -1;
                }
                o->total = h->total;
                o->posted = 1;
                o->dst = req->varlen_alloc(req->varlen_arg, p, o->total);
                if (!o->dst && o->total) {
                    terse__comm_fail(comm, TERSE_ERR_NO_MEMORY, p, req->seq, 1,
                                     "no memory for a %llu-byte message from rank %d",
                                     (unsigned long long)o->total, p);
                    return -1;
                }
            }
            if (h->bytes)
                memcpy((char *)o->dst + o->got, base + TERSE_HDR_SIZE, h->bytes);
            o->got += h->bytes;
            comm->stats.chunks_slotted++;
            req->recv_chunk[p]++;
            ch->consumed++;
            ch->credits_owed++;
            moved++;
            if (o->got == o->total) {
                op_done(req, o);
                (*cur)++;
            }
            continue;
        }
        if (h->placed != TERSE_PLACED_MAGIC) {
            apply_recv(req, o, base + TERSE_HDR_SIZE);
            comm->stats.chunks_slotted++;
        }
        req->recv_chunk[p]++;
        op_done(req, o);
        (*cur)++;
        ch->consumed++;
        ch->credits_owed++;
        moved++;
    }
    return moved;
}

void *terse__comm_place(void *arg, int peer, void *head, size_t head_len, size_t rest_len)
{
    terse_comm_t *comm = arg;
    terse_chan_t *ch = &comm->chans[peer];
    terse_wire_hdr_t *h = head;
    (void)head_len;
    /* Anything unusual takes the normal path, where consume_peer() reports it. */
    if (h->magic != TERSE_WIRE_MAGIC || h->src != peer)
        return NULL;
    terse_request_t *req = find_seq(comm, h->seq);
    if (!req || req->has_varlen)
        return NULL;
    /* Chunks still waiting in slots come first; when they belong to the same
     * call, this one is the op that many places after the cursor. */
    uint64_t backlog = ch->arrived - ch->consumed;
    for (uint64_t k = ch->consumed; k < ch->arrived; k++) {
        const terse_wire_hdr_t *w = (const terse_wire_hdr_t *)(comm->recv_region +
            ((size_t)peer * (size_t)comm->nslots + (size_t)(k % (uint64_t)comm->nslots)) * comm->slot_stride);
        if (w->seq != h->seq)
            return NULL;
    }
    int cur = req->recv_cur[peer] + (int)backlog, end = req->recv_off[peer + 1] - req->recv_off[peer];
    if (cur >= end)
        return NULL;
    terse_sched_op_t *o = &req->ops[req->recv_idx[req->recv_off[peer] + cur]];
    if (h->sig != req->sig || h->stream != (uint32_t)cur || h->bytes != o->bytes ||
        o->action != TERSE_ACT_COPY || o->bytes != rest_len || o->finalize || !deps_done(req, o))
        return NULL;
    h->placed = TERSE_PLACED_MAGIC;
    comm->stats.chunks_placed++;
    return o->dst;
}

static int process_arrivals(terse_comm_t *comm)
{
    int moved = 0;
    for (int p = 0; p < comm->size; p++) {
        int m = consume_peer(comm, p);
        if (m < 0)
            break;
        moved += m;
    }
    return moved;
}

/* Return freed slots, batched: while work flows a peer gets them back once
 * half its window is free; before this rank blocks, always (so no peer can
 * wait on credits we sit on). */
static void return_credits(terse_comm_t *comm, int all)
{
    for (int p = 0; p < comm->size; p++) {
        terse_chan_t *ch = &comm->chans[p];
        if (!ch->credits_owed || ch->lost || ch->bye || (!all && ch->credits_owed * 2 < (uint32_t)comm->nslots))
            continue;
        comm->tp_ops->write_notify(comm->tp, p, NULL, 0, NULL, 0,
                                   TERSE_IMM(TERSE_IMM_CREDIT, ch->credits_owed), UINT64_MAX);
        ch->credits_owed = 0;
    }
}

static int run_locals(terse_comm_t *comm)
{
    int moved = 0;
    for (terse_request_t *req = comm->req_head; req; req = req->next) {
        while (req->local_cur < req->nlocal) {
            terse_sched_op_t *o = &req->ops[req->local_idx[req->local_cur]];
            if (!deps_done(req, o))
                break;
            if (o->action == TERSE_ACT_MEMCPY && o->dst != o->src)
                memcpy(o->dst, o->src, o->bytes);
            else if (o->action == TERSE_ACT_SCALE && req->op == TERSE_AVG)
                terse__scale_avg(req->dtype, o->dst, o->bytes / terse_dtype_size(req->dtype),
                                 req->comm->size);
            op_done(req, o);
            req->local_cur++;
            moved++;
        }
    }
    return moved;
}

/* A request waiting for a peer that is gone will never finish. A peer that
 * is gone but not needed is no error: it may have finished and left. */
static void check_departed(terse_comm_t *comm)
{
    for (terse_request_t *req = comm->req_head; req; req = req->next)
        for (int p = 0; p < comm->size; p++) {
            terse_chan_t *ch = &comm->chans[p];
            if ((ch->bye || ch->lost) && req->recv_cur[p] < req->recv_off[p + 1] - req->recv_off[p] &&
                ch->consumed == ch->arrived) {
                terse__comm_fail(comm, TERSE_ERR_PEER_FAILED, p, req->seq, 1,
                                 "rank %d %s while this rank waits for its data in %s #%u", p,
                                 ch->bye ? "destroyed its communicator"
                                         : "is unreachable (connection lost: process died?)",
                                 coll_names[req->coll], req->seq);
                return;
            }
        }
}

static void check_timeout(terse_comm_t *comm)
{
    terse_request_t *req = comm->req_head;
    double idle = terse__now() - comm->last_activity;
    if (!req || idle < comm->cfg.timeout_sec)
        return;
    /* Name the first peer the oldest request is waiting for. */
    for (int p = 0; p < comm->size; p++) {
        terse_chan_t *ch = &comm->chans[p];
        if (req->recv_cur[p] < req->recv_off[p + 1] - req->recv_off[p]) {
            terse__comm_fail(comm, TERSE_ERR_TIMEOUT, p, req->seq, 1,
                             "no data from rank %d for %.1f s in %s #%u (TERSE_TIMEOUT=%g): the "
                             "peer is stuck, slow or did not make this call",
                             p, idle, coll_names[req->coll], req->seq, comm->cfg.timeout_sec);
            return;
        }
        if (req->send_cur[p] < req->send_off[p + 1] - req->send_off[p] &&
            ch->sent - ch->credited >= (uint64_t)comm->nslots) {
            terse__comm_fail(comm, TERSE_ERR_TIMEOUT, p, req->seq, 1,
                             "rank %d has not freed receive slots for %.1f s in %s #%u "
                             "(TERSE_TIMEOUT=%g)", p, idle, coll_names[req->coll], req->seq,
                             comm->cfg.timeout_sec);
            return;
        }
    }
    terse__comm_fail(comm, TERSE_ERR_TIMEOUT, -1, req->seq, 1, "no progress for %.1f s in %s #%u",
                     idle, coll_names[req->coll], req->seq);
}

static void on_abort(terse_comm_t *comm, int from, uint32_t val)
{
    terse_chan_t *ch = &comm->chans[from];
    uint32_t c = val >> 8;
    terse_status_t st = (terse_status_t)(-(int)(val & 0xff));
    /* Widen the peer's 29-bit sequence number to ours: the nearest value. */
    uint32_t seq = comm->next_seq - ((comm->next_seq - ch->abort_seq) & TERSE_IMM_VAL_MASK);
    int culprit = c == TERSE_CULPRIT_NONE || c >= (uint32_t)comm->size ? -1 : (int)c;
    /* Forward it (propagate = 1): our later goodbye then reaches every peer
     * only after the abort, so no peer mistakes our exit for the cause. */
    if (culprit == comm->rank)
        terse__comm_fail(comm, st, culprit, seq, 1, "rank %d reported an error involving this rank: %s",
                         from, terse_strerror(st));
    else if (culprit >= 0)
        terse__comm_fail(comm, st, culprit, seq, 1, "rank %d reported: %s (rank %d)", from,
                         terse_strerror(st), culprit);
    else
        terse__comm_fail(comm, st, culprit, seq, 1, "rank %d reported: %s", from, terse_strerror(st));
}

void terse__comm_on_event(void *arg, const terse_tp_event_t *ev)
{
    terse_comm_t *comm = arg;
    terse_chan_t *ch = &comm->chans[ev->peer];
    comm->last_activity = terse__now();
    switch (ev->type) {
    case TERSE_TP_EV_SEND_DONE: {
        if (ev->cookie == UINT64_MAX)
            return;
        terse_request_t *req = find_seq(comm, (uint32_t)(ev->cookie >> 32));
        uint32_t oi = (uint32_t)ev->cookie;
        if (req && oi < (uint32_t)req->nops && !req->ops[oi].done)
            op_done(req, &req->ops[oi]);
        return;
    }
    case TERSE_TP_EV_PEER_ERROR:
        /* Not an error by itself: the peer may have finished. The calls that
         * still need it fail in check_departed / issue_sends. */
        ch->lost = 1;
        TERSE_INFO(NET, "rank %d: %s", ev->peer, ev->msg ? ev->msg : terse_strerror(ev->status));
        if (ev->status == TERSE_ERR_PROTOCOL)
            terse__comm_fail(comm, ev->status, ev->peer, comm->req_head ? comm->req_head->seq : comm->next_seq,
                             1, "rank %d: %s", ev->peer, ev->msg ? ev->msg : terse_strerror(ev->status));
        return;
    case TERSE_TP_EV_NOTIFY:
        break;
    }
    uint32_t val = TERSE_IMM_VAL(ev->imm);
    switch (TERSE_IMM_TYPE(ev->imm)) {
    case TERSE_IMM_DATA:
        if (val != ch->arrived % (uint64_t)comm->nslots || ch->arrived - ch->consumed >= (uint64_t)comm->nslots) {
            terse__comm_fail(comm, TERSE_ERR_PROTOCOL, ev->peer, comm->next_seq, 1,
                             "rank %d wrote slot %u out of order or without credit", ev->peer, val);
            return;
        }
        ch->arrived++;
        return;
    case TERSE_IMM_CREDIT:
        if (val > ch->sent - ch->credited) {
            terse__comm_fail(comm, TERSE_ERR_PROTOCOL, ev->peer, comm->next_seq, 1,
                             "rank %d returned %u credits for %llu outstanding slots", ev->peer, val,
                             (unsigned long long)(ch->sent - ch->credited));
            return;
        }
        ch->credited += val;
        return;
    case TERSE_IMM_ABORT_SEQ:
        ch->abort_seq = val;
        return;
    case TERSE_IMM_ABORT:
        on_abort(comm, ev->peer, val);
        return;
    case TERSE_IMM_BYE:
        ch->bye = 1;
        return;
    default:
        terse__comm_fail(comm, TERSE_ERR_PROTOCOL, ev->peer, comm->next_seq, 1,
                         "rank %d sent an unknown notification %08x", ev->peer, ev->imm);
        return;
    }
}

void terse__comm_progress(terse_comm_t *comm, int timeout_ms)
{
    if (!comm->req_head)
        return;
    int moved = issue_sends(comm);
    moved += process_arrivals(comm);
    moved += run_locals(comm);
    return_credits(comm, !moved);
    /* Poll without blocking when we just did work: more may already be ready. */
    int ev = comm->tp_ops->progress(comm->tp, moved ? 0 : timeout_ms, terse__comm_on_event, comm);
    if (ev < 0)
        terse__comm_fail(comm, (terse_status_t)ev, -1, comm->req_head ? comm->req_head->seq : comm->next_seq,
                         1, "transport progress failed: %s", terse_strerror((terse_status_t)ev));
    /* Retire finished requests. */
    for (terse_request_t *req = comm->req_head, *next; req; req = next) {
        next = req->next;
        if (req->remaining == 0)
            request_finish(comm, req, TERSE_OK);
    }
    if (comm->req_head)
        check_departed(comm);
    if (comm->req_head)
        check_timeout(comm);
}

void terse__sched_fail_from(terse_comm_t *comm, uint32_t from)
{
    /* The failed calls return to the caller, who may free the buffers:
     * nothing queued may read them any more. */
    for (int p = 0; p < comm->size; p++)
        if (p != comm->rank)
            comm->tp_ops->cancel(comm->tp, p, (uint64_t)from << 32);
    for (terse_request_t *req = comm->req_head, *next; req; req = next) {
        next = req->next;
        if (terse__seq_ge(req->seq, from))
            request_finish(comm, req, comm->error);
    }
}
