/*
 * executor.c - the schedule executor (see executor.h). Nothing here knows
 * which algorithm built a schedule; a request's ops name communicator
 * ranks, which are mapped to world ranks (the context's channels) here.
 */
#include "executor.h"
#include "dtype.h"
#include "memreg.h"
#include "log.h"
#include "progress.h"
#include "net.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *coll_names[] = {"?",          "allreduce", "reduce_scatter", "allgather",
                                   "allgatherv", "broadcast", "barrier",        "compressed",
                                   "shrink agreement", "alltoall", "alltoallv", "reduce",
                                   "partial allreduce", "adacons"};

static const char *coll_name(int coll)
{
    return coll >= 1 && coll <= TERSE_COLL_ADACONS ? coll_names[coll] : "?";
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

/* Slot k of peer's receive slots (they exist once it sent anything). */
static inline char *slot_at(const terse_ctx_t *ctx, int peer, uint64_t k)
{
    return ctx->slots[peer] + (size_t)(k % (uint64_t)ctx->nslots) * ctx->slot_stride;
}

static terse_request_t *find_req(const terse_ctx_t *ctx, const terse_comm_t *comm, uint32_t seq)
{
    for (terse_request_t *r = ctx->req_head; r; r = r->next)
        if (r->comm == comm && r->seq == seq)
            return r;
    return NULL;
}

static terse_request_t *find_serial(const terse_ctx_t *ctx, uint32_t serial)
{
    for (terse_request_t *r = ctx->req_head; r; r = r->next)
        if (r->serial == serial)
            return r;
    return NULL;
}

static void owe_credit(terse_ctx_t *ctx, int peer)
{
    terse_chan_t *ch = &ctx->chans[peer];
    ch->consumed++;
    ch->credits_owed++;
    if (!ch->owed_listed) {
        ch->owed_listed = 1;
        ctx->owed[ctx->nowed++] = peer;
    }
}

static void request_finish(terse_request_t *req, terse_status_t st)
{
    terse_ctx_t *ctx = req->comm->ctx;
    if (req->on_done) { /* once: what it does may fail other requests */
        terse_status_t (*done)(terse_request_t *, void *, terse_status_t) = req->on_done;
        req->on_done = NULL;
        st = done(req, req->call_arg, st);
    }
    terse_request_t **pp = &ctx->req_head, *prev = NULL;
    while (*pp && *pp != req) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = req->next;
        if (ctx->req_tail == req)
            ctx->req_tail = prev;
        req->comm->pending--;
    }
    req->next = NULL;
    req->done = 1;
    req->status = st;
    ctx->finished++;
    if (!req->persistent) { /* a plan keeps its scratch for the next start */
        free(req->scratch);
        req->scratch = NULL;
    }
    if (req->freed_by_user)
        terse__sched_free(req);
}

static terse_status_t submit_locked(terse_request_t *req)
{
    terse_comm_t *comm = req->comm;
    terse_ctx_t *ctx = comm->ctx;
    if (!req->persistent) {
        /* numbered here, under the lock: a number given out before its
         * request is queued would make the progress thread take that
         * request's early data for a finished one's */
        req->seq = comm->next_seq++;
        comm->stats.calls++;
    }
    terse_status_t st = comm->error != TERSE_OK ? comm->error : terse__sched_finish(req);
    if (st != TERSE_OK) {
        if (req->persistent) { /* the plan stays the caller's, inactive */
            req->done = 1;
            req->status = st;
        } else {
            terse__sched_free(req);
        }
        return st;
    }
    /* UINT32_MAX never names a request: cookies of bare notifications are all ones */
    req->serial = ++ctx->serials == UINT32_MAX ? ++ctx->serials : ctx->serials;
    if (ctx->req_tail)
        ctx->req_tail->next = req;
    else
        ctx->req_head = req;
    ctx->req_tail = req;
    if (!comm->pending)
        comm->last_progress = terse__now(); /* an idle communicator's clock starts now */
    comm->pending++;
    ctx->last_activity = terse__now();
    if (req->nops == 0)
        request_finish(req, TERSE_OK);
    else if (!ctx->thread_on && !ctx->in_progress) /* with the thread, the caller returns at once */
        terse__exec_progress(ctx, 0);
    return TERSE_OK;
}

terse_status_t terse__exec_submit_locked(terse_request_t *req)
{
    terse_ctx_t *ctx = req->comm->ctx; /* req may be gone after: done at once, freed */
    terse_status_t st = submit_locked(req);
    terse__progress_kick(ctx);
    return st;
}

terse_status_t terse__exec_submit(terse_request_t *req)
{
    terse_ctx_t *ctx = req->comm->ctx;
    terse__ctx_lock(ctx);
    terse_status_t st = terse__exec_submit_locked(req);
    terse__ctx_unlock(ctx);
    return st;
}

void terse__exec_open_gate(terse_request_t *req, int idx)
{
    req->ops[idx].posted = 1;
    req->comm->last_progress = terse__now();
    terse__progress_kick(req->comm->ctx);
}

/* ---- sends ------------------------------------------------------------ */

/* Post every send that may go: in order per peer, and per communicator one
 * request at a time (a request that cannot send to a peer holds back the
 * later requests of its communicator to that peer, not those of others). */
static int issue_sends(terse_ctx_t *ctx)
{
    int moved = 0;
    uint64_t round = ++ctx->issue_round;
    for (terse_request_t *req = ctx->req_head; req; req = req->next) {
        terse_comm_t *comm = req->comm;
        for (int i = 0; i < req->npeers; i++) {
            int q = req->peers[i], p = comm->world[q];
            if (comm->peer_block[q] == round)
                continue;
            terse_chan_t *ch = &ctx->chans[p];
            int *cur = &req->send_cur[q];
            int end = req->send_off[q + 1] - req->send_off[q];
            while (*cur < end && ch->sent - ch->credited < (uint64_t)ctx->nslots) {
                int oi = req->send_idx[req->send_off[q] + *cur];
                terse_sched_op_t *o = &req->ops[oi];
                if (!deps_done(req, o))
                    break;
                if (ch->bye || ch->lost || ch->fenced) {
                    comm->suspect = p;
                    terse__exec_fail(comm, TERSE_ERR_PEER_FAILED, q, req->seq, 1,
                                     "rank %d is gone (%s) but %s #%u still sends to it", q,
                                     ch->bye ? "closed its communicators"
                                             : ch->fenced ? "excluded by a shrink" : "connection lost",
                                     coll_name(req->coll), req->seq);
                    return moved; /* the request list changed under us */
                }
                uint32_t slot = (uint32_t)(ch->sent % (uint64_t)ctx->nslots);
                terse_wire_hdr_t *h =
                    (terse_wire_hdr_t *)(ctx->hdr_region +
                                         ((size_t)p * (size_t)ctx->nslots + slot) * TERSE_HDR_SIZE);
                *h = (terse_wire_hdr_t){.magic = TERSE_WIRE_MAGIC, .seq = req->seq, .sig = req->sig,
                                        .stream = (uint32_t)*cur, .bytes = (uint32_t)o->bytes,
                                        .src = ctx->rank, .coll = (uint8_t)req->coll,
                                        .dtype = (uint8_t)req->dtype, .op = (uint8_t)req->op,
                                        .root = req->root, .count = req->count,
                                        .total = o->total, .comm = comm->id};
                /* registered source memory goes out zero-copy */
                terse_tp_mr_t *src_mr = o->bytes ? terse__memreg_find(ctx, o->src, o->bytes) : NULL;
                terse_tp_iov_t iov[2] = {{h, TERSE_HDR_SIZE, ctx->hdr_mr}, {o->src, o->bytes, src_mr}};
                uint64_t off = (uint64_t)slot * ctx->slot_stride;
                ch->talked = 1;
                terse_status_t st = ctx->tp_ops->write_notify(
                    ctx->tp, p, iov, o->bytes ? 2 : 1, off, TERSE_IMM(TERSE_IMM_DATA, slot),
                    ((uint64_t)req->serial << 32) | (uint32_t)oi);
                if (st == TERSE_IN_PROGRESS)
                    break; /* no resource now (bounce pool): retry after completions */
                if (st == TERSE_ERR_PEER_FAILED && !ch->lost)
                    break; /* the peer is going: the transport reports it (after an abort it
                            * may have sent us is read, which names the real cause) */
                if (st != TERSE_OK) {
                    terse__exec_fail(comm, st, q, req->seq, 1, "write to rank %d failed: %s", q,
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
                comm->peer_block[q] = round; /* later requests of comm wait their turn on q */
        }
    }
    return moved;
}

/* ---- arrivals --------------------------------------------------------- */

static void describe(char *buf, size_t len, int coll, int dtype, int op, uint64_t count, uint32_t seq)
{
    snprintf(buf, len, "%s #%u (count %llu, %s, %s)", coll_name(coll), seq, (unsigned long long)count,
             terse_dtype_name((terse_dtype_t)dtype), terse_op_name((terse_op_t)op));
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

/* The first call of comm an error that names no call should fail. */
static void oldest_seq(const terse_comm_t *comm, uint32_t *seq)
{
    for (terse_request_t *r = comm->ctx->req_head; r; r = r->next)
        if (r->comm == comm) {
            *seq = r->seq;
            return;
        }
    *seq = comm->next_seq;
}

/* take_chunk's verdicts. WAIT: its request is here but not ready for it;
 * AHEAD: its communicator or call does not exist here yet. */
enum { CHUNK_TAKEN, CHUNK_WAIT, CHUNK_AHEAD, CHUNK_FAILED };

/* One arrived chunk from world rank p, header h and payload (in its slot or
 * in the stash): apply it, drop it, leave it for later, or fail. */
static int take_chunk(terse_ctx_t *ctx, int p, terse_wire_hdr_t *h, const char *payload)
{
    terse_comm_t *comm = terse__ctx_find_comm(ctx, h->comm);
    if (!comm) {
        if (terse__ctx_comm_was(ctx, h->comm))
            return CHUNK_TAKEN; /* for a communicator destroyed here: drop */
        return CHUNK_AHEAD;     /* one this rank has not created yet */
    }
    int m = comm->rank_of[p];
    uint32_t oldest;
    if (m < 0) {
        oldest_seq(comm, &oldest);
        terse__exec_fail(comm, TERSE_ERR_PROTOCOL, -1, oldest, 1,
                         "world rank %d sent data on a communicator it is not a member of", p);
        return CHUNK_FAILED;
    }
    terse_request_t *req = find_req(ctx, comm, h->seq);
    if (!req) {
        if (comm->error != TERSE_OK && terse__seq_ge(h->seq, comm->error_seq))
            return CHUNK_TAKEN; /* data for a call that already failed: drop it */
        if (terse__seq_ge(h->seq, comm->next_seq))
            return CHUNK_AHEAD; /* the peer is ahead of us: keep it until we start that call */
        if (comm->internal)
            return CHUNK_TAKEN; /* a round this rank left already (shrink's agreement) */
        char theirs[128];
        describe(theirs, sizeof(theirs), h->coll, h->dtype, h->op, h->count, h->seq);
        oldest_seq(comm, &oldest);
        terse__exec_fail(comm, TERSE_ERR_MISMATCH, m, oldest, 1,
                         "rank %d sent data for %s, which this rank has already completed "
                         "(ranks called different collectives or counts)", m, theirs);
        return CHUNK_FAILED;
    }
    int *cur = &req->recv_cur[m];
    int end = req->recv_off[m + 1] - req->recv_off[m];
    terse_sched_op_t *o = *cur < end ? &req->ops[req->recv_idx[req->recv_off[m] + *cur]] : NULL;
    if (!o && comm->internal)
        return CHUNK_TAKEN; /* from a rank this round does not hear (shrink: a suspect) */
    int varlen = o && o->action == TERSE_ACT_VARLEN;
    if (h->sig != req->sig || !o || h->stream != (uint32_t)req->recv_chunk[m] ||
        (varlen ? h->bytes > h->total - o->got || (o->got && h->total != o->total) : h->bytes != o->bytes)) {
        char theirs[128], ours[128];
        describe(theirs, sizeof(theirs), h->coll, h->dtype, h->op, h->count, h->seq);
        describe(ours, sizeof(ours), req->coll, req->dtype, req->op, req->count, req->seq);
        terse__exec_fail(comm, TERSE_ERR_MISMATCH, m, req->seq, 1,
                         "mismatched collectives: rank %d called %s%s, rank %d called %s", m, theirs,
                         h->sig == req->sig ? " with other sizes or root" : "", comm->rank, ours);
        return CHUNK_FAILED;
    }
    if (!deps_done(req, o))
        return CHUNK_WAIT;
    comm->last_progress = terse__now();
    if (varlen) {
        if (o->got == 0 && !o->posted) {
            /* first chunk: the message's size, then its buffer */
            if (h->total > o->bytes) {
                terse__exec_fail(comm, TERSE_ERR_PROTOCOL, m, req->seq, 1,
                                 "rank %d sent a %llu-byte message where at most %zu fit", m,
                                 (unsigned long long)h->total, o->bytes);
                return CHUNK_FAILED;
            }
            o->total = h->total;
            o->posted = 1;
            o->dst = req->varlen_alloc(req->varlen_arg, m, o->total);
            if (!o->dst && o->total) {
                terse__exec_fail(comm, TERSE_ERR_NO_MEMORY, m, req->seq, 1,
                                 "no memory for a %llu-byte message from rank %d",
                                 (unsigned long long)o->total, m);
                return CHUNK_FAILED;
            }
        }
        if (h->bytes)
            memcpy((char *)o->dst + o->got, payload, h->bytes);
        o->got += h->bytes;
        comm->stats.chunks_slotted++;
        req->recv_chunk[m]++;
        if (o->got == o->total) {
            op_done(req, o);
            (*cur)++;
            if (req->on_recv)
                req->on_recv(req, m, (int)(o - req->ops));
        }
        return CHUNK_TAKEN;
    }
    if (h->placed != TERSE_PLACED_MAGIC) {
        apply_recv(req, o, payload);
        comm->stats.chunks_slotted++;
    }
    req->recv_chunk[m]++;
    op_done(req, o);
    (*cur)++;
    if (req->on_recv)
        req->on_recv(req, m, (int)(o - req->ops));
    return CHUNK_TAKEN;
}

static int stash_has(const terse_chan_t *ch, uint64_t comm)
{
    for (const terse_stash_t *s = ch->stash_head; s; s = s->next)
        if (s->hdr.comm == comm)
            return 1;
    return 0;
}

/* Consume stashed chunks that can go now, oldest first per communicator. */
static int drain_stash(terse_ctx_t *ctx, int p)
{
    terse_chan_t *ch = &ctx->chans[p];
    uint64_t blocked[8];
    int nblocked = 0, moved = 0;
    for (terse_stash_t **pp = &ch->stash_head, *prev = NULL; *pp;) {
        terse_stash_t *s = *pp;
        int skip = 0;
        for (int i = 0; i < nblocked; i++)
            skip |= blocked[i] == s->hdr.comm;
        int rc = skip ? CHUNK_WAIT : take_chunk(ctx, p, &s->hdr, s->data);
        if (rc == CHUNK_FAILED)
            return -1;
        if (rc == CHUNK_WAIT || rc == CHUNK_AHEAD) {
            if (!skip) {
                if (nblocked == 8)
                    break;
                blocked[nblocked++] = s->hdr.comm;
            }
            prev = s;
            pp = &s->next;
            continue;
        }
        *pp = s->next;
        if (ch->stash_tail == s)
            ch->stash_tail = prev;
        ctx->stash_bytes -= s->hdr.bytes;
        free(s);
        moved++;
    }
    return moved;
}

/* Move the chunk at the head of p's slots into the stash. 0, or -1 if it
 * may stay: it is consumed later unless a chunk of another communicator
 * waits behind it, or the window is full of calls this rank has not started
 * (the peer may have other communicators' data to send). Over budget it stays. */
static int stash_head(terse_ctx_t *ctx, int p, const terse_wire_hdr_t *h, const char *payload, int why)
{
    terse_chan_t *ch = &ctx->chans[p];
    if (why != CHUNK_TAKEN) {
        int other = why == CHUNK_AHEAD && ch->arrived - ch->consumed >= (uint64_t)ctx->nslots;
        for (uint64_t k = ch->consumed + 1; k < ch->arrived && !other; k++)
            other = ((const terse_wire_hdr_t *)slot_at(ctx, p, k))->comm != h->comm;
        if (!other)
            return -1;
    }
    if (ctx->stash_bytes + h->bytes > ctx->stash_limit)
        return -1;
    terse_stash_t *s = malloc(sizeof(*s) + h->bytes);
    if (!s)
        return -1;
    s->next = NULL;
    s->hdr = *h;
    memcpy(s->data, payload, h->bytes);
    if (ch->stash_tail)
        ch->stash_tail->next = s;
    else
        ch->stash_head = s;
    ch->stash_tail = s;
    ctx->stash_bytes += h->bytes;
    owe_credit(ctx, p);
    return 0;
}

/* Consume what world rank p sent, oldest first. Returns chunks consumed,
 * or -1 when an error changed the request list. */
static int consume_peer(terse_ctx_t *ctx, int p)
{
    terse_chan_t *ch = &ctx->chans[p];
    int moved = 0;
    if (ch->stash_head && (moved = drain_stash(ctx, p)) < 0)
        return -1;
    while (ch->consumed < ch->arrived) {
        char *base = slot_at(ctx, p, ch->consumed);
        terse_wire_hdr_t *h = (terse_wire_hdr_t *)base;
        if (ch->fenced) {
            owe_credit(ctx, p);
            continue;
        }
        if (h->magic != TERSE_WIRE_MAGIC || h->src != p || h->bytes > ctx->chunk) {
            int failed = 0;
            for (terse_comm_t *c = ctx->comms; c; c = c->next_in_ctx)
                if (c->rank_of[p] >= 0) {
                    uint32_t oldest;
                    oldest_seq(c, &oldest);
                    terse__exec_fail(c, TERSE_ERR_PROTOCOL, c->rank_of[p], oldest, 1,
                                     "malformed chunk header from rank %d (magic %08x, src %d, %u bytes)",
                                     c->rank_of[p], h->magic, h->src, h->bytes);
                    failed = 1;
                }
            ch->fenced = 1; /* nothing more from it can be trusted */
            return failed ? -1 : moved;
        }
        /* a communicator with stashed chunks takes this one behind them */
        if (ch->stash_head && stash_has(ch, h->comm)) {
            if (stash_head(ctx, p, h, base + TERSE_HDR_SIZE, CHUNK_TAKEN) != 0)
                break;
            continue;
        }
        int rc = take_chunk(ctx, p, h, base + TERSE_HDR_SIZE);
        if (rc == CHUNK_FAILED)
            return -1;
        if (rc == CHUNK_WAIT || rc == CHUNK_AHEAD) {
            if (stash_head(ctx, p, h, base + TERSE_HDR_SIZE, rc) != 0)
                break;
            continue;
        }
        owe_credit(ctx, p);
        moved++;
    }
    return moved;
}

void *terse__exec_place(void *arg, int peer, void *head, size_t head_len, size_t rest_len)
{
    terse_ctx_t *ctx = arg;
    terse_chan_t *ch = &ctx->chans[peer];
    terse_wire_hdr_t *h = head;
    (void)head_len;
    /* Anything unusual takes the normal path, where consume_peer() reports it. */
    if (h->magic != TERSE_WIRE_MAGIC || h->src != peer || ch->stash_head || ch->fenced)
        return NULL;
    terse_comm_t *comm = terse__ctx_find_comm(ctx, h->comm);
    int m = comm ? comm->rank_of[peer] : -1;
    terse_request_t *req = m >= 0 ? find_req(ctx, comm, h->seq) : NULL;
    if (!req || req->has_varlen)
        return NULL;
    /* Chunks still waiting in slots come first; when they belong to the same
     * call, this one is the op that many places after the cursor. */
    uint64_t backlog = ch->arrived - ch->consumed;
    for (uint64_t k = ch->consumed; k < ch->arrived; k++) {
        const terse_wire_hdr_t *w = (const terse_wire_hdr_t *)slot_at(ctx, peer, k);
        if (w->seq != h->seq || w->comm != h->comm)
            return NULL;
    }
    int cur = req->recv_cur[m] + (int)backlog, end = req->recv_off[m + 1] - req->recv_off[m];
    if (cur >= end)
        return NULL;
    terse_sched_op_t *o = &req->ops[req->recv_idx[req->recv_off[m] + cur]];
    if (h->sig != req->sig || h->stream != (uint32_t)cur || h->bytes != o->bytes ||
        o->action != TERSE_ACT_COPY || o->bytes != rest_len || o->finalize || !deps_done(req, o))
        return NULL;
    h->placed = TERSE_PLACED_MAGIC;
    comm->stats.chunks_placed++;
    return o->dst;
}

/* Visit the peers with something to consume: every chunk is looked at, also
 * from peers the active requests do not talk to (a mismatched call there is
 * reported, not waited out). */
static int process_arrivals(terse_ctx_t *ctx)
{
    int moved = 0, keep = 0, n = ctx->nready;
    for (int i = 0; i < n; i++) {
        int p = ctx->ready[i];
        int m = consume_peer(ctx, p);
        if (m < 0) {
            /* the request list changed under us: keep the rest for the next pass */
            for (int j = i; j < n; j++)
                ctx->ready[keep++] = ctx->ready[j];
            ctx->nready = keep;
            return moved;
        }
        moved += m;
        terse_chan_t *ch = &ctx->chans[p];
        if (ch->consumed < ch->arrived || ch->stash_head)
            ctx->ready[keep++] = p;
        else
            ch->ready_listed = 0;
    }
    /* entries added while consuming (none today) would sit past n */
    for (int j = n; j < ctx->nready; j++)
        ctx->ready[keep++] = ctx->ready[j];
    ctx->nready = keep;
    return moved;
}

/* Return freed slots, batched: while work flows a peer gets them back once
 * half its window is free; before this rank blocks, always (so no peer can
 * wait on credits we sit on). */
static void return_credits(terse_ctx_t *ctx, int all)
{
    int keep = 0;
    for (int i = 0; i < ctx->nowed; i++) {
        int p = ctx->owed[i];
        terse_chan_t *ch = &ctx->chans[p];
        if (ch->credits_owed && !ch->lost && !ch->bye && !all && ch->credits_owed * 2 < (uint32_t)ctx->nslots) {
            ctx->owed[keep++] = p;
            continue;
        }
        if (ch->credits_owed && !ch->lost && !ch->bye) {
            ch->talked = 1;
            ctx->tp_ops->write_notify(ctx->tp, p, NULL, 0, 0, TERSE_IMM(TERSE_IMM_CREDIT, ch->credits_owed),
                                      UINT64_MAX);
        }
        ch->credits_owed = 0;
        ch->owed_listed = 0;
    }
    ctx->nowed = keep;
}

static int run_locals(terse_ctx_t *ctx)
{
    int moved = 0;
    for (terse_request_t *req = ctx->req_head, *next; req; req = next) {
        next = req->next;
        while (req->local_cur < req->nlocal) {
            terse_sched_op_t *o = &req->ops[req->local_idx[req->local_cur]];
            if (!deps_done(req, o) || (o->action == TERSE_ACT_GATE && !o->posted))
                break;
            if (o->action == TERSE_ACT_CALL) {
                terse_status_t st = o->call(req, req->call_arg, o->bytes);
                op_done(req, o);
                req->local_cur++;
                moved++;
                if (st != TERSE_OK) {
                    terse__exec_fail(req->comm, st, -1, req->seq, 1, "%s #%u: a local step failed: %s",
                                     coll_name(req->coll), req->seq, terse_strerror(st));
                    return moved; /* the request list changed under us */
                }
                req->comm->last_progress = terse__now();
                /* one call per pass: what it produced goes on the wire while
                 * the next is computed */
                break;
            }
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
static void check_departed(terse_ctx_t *ctx)
{
    for (terse_request_t *req = ctx->req_head; req; req = req->next) {
        terse_comm_t *comm = req->comm;
        for (int i = 0; i < req->npeers; i++) {
            int q = req->peers[i];
            terse_chan_t *ch = &ctx->chans[comm->world[q]];
            /* a round prepared ahead that nobody started does not need a peer
             * that left cleanly yet: it fails if the caller starts it */
            if (req->patient && ch->bye)
                continue;
            if ((ch->bye || ch->lost || ch->fenced) && req->recv_cur[q] < req->recv_off[q + 1] - req->recv_off[q] &&
                ch->consumed == ch->arrived && !ch->stash_head) {
                comm->suspect = comm->world[q];
                terse__exec_fail(comm, TERSE_ERR_PEER_FAILED, q, req->seq, 1,
                                 "rank %d %s while this rank waits for its data in %s #%u", q,
                                 ch->bye ? "closed its communicators"
                                 : ch->fenced ? "was excluded by a shrink"
                                              : "is unreachable (connection lost: process died?)",
                                 coll_name(req->coll), req->seq);
                return;
            }
        }
    }
}

static void check_timeout(terse_ctx_t *ctx)
{
    double now = terse__now();
    for (terse_request_t *req = ctx->req_head; req; req = req->next) {
        terse_comm_t *comm = req->comm;
        if (req->patient)
            continue;
        /* the first request of a communicator is its oldest */
        double idle = now - comm->last_progress;
        if (idle < comm->cfg.timeout_sec)
            continue;
        /* data that just arrived and waits to be consumed is no silence (a
         * rank that was stopped and resumes finds its peers' data there) */
        int waiting = 0;
        for (int i = 0; i < req->npeers && !waiting; i++) {
            const terse_chan_t *ch = &ctx->chans[comm->world[req->peers[i]]];
            waiting = ch->consumed < ch->arrived && now - ch->last_arrival < comm->cfg.timeout_sec;
        }
        if (waiting) {
            comm->last_progress = now;
            continue;
        }
        /* Name the first peer the request is waiting for. */
        for (int i = 0; i < req->npeers; i++) {
            int q = req->peers[i];
            terse_chan_t *ch = &ctx->chans[comm->world[q]];
            if (req->recv_cur[q] < req->recv_off[q + 1] - req->recv_off[q]) {
                comm->suspect = comm->world[q];
                terse__exec_fail(comm, TERSE_ERR_TIMEOUT, q, req->seq, 1,
                                 "no data from rank %d for %.1f s in %s #%u (TERSE_TIMEOUT=%g): the "
                                 "peer is stuck, slow or did not make this call",
                                 q, idle, coll_name(req->coll), req->seq, comm->cfg.timeout_sec);
                return;
            }
            if (req->send_cur[q] < req->send_off[q + 1] - req->send_off[q] &&
                ch->sent - ch->credited >= (uint64_t)ctx->nslots) {
                comm->suspect = comm->world[q];
                terse__exec_fail(comm, TERSE_ERR_TIMEOUT, q, req->seq, 1,
                                 "rank %d has not freed receive slots for %.1f s in %s #%u "
                                 "(TERSE_TIMEOUT=%g)", q, idle, coll_name(req->coll), req->seq,
                                 comm->cfg.timeout_sec);
                return;
            }
        }
        terse__exec_fail(comm, TERSE_ERR_TIMEOUT, -1, req->seq, 1, "no progress for %.1f s in %s #%u",
                         idle, coll_name(req->coll), req->seq);
        return;
    }
}

/* ---- failures --------------------------------------------------------- */

static int drop_cancelled(void *arg, uint64_t cookie)
{
    terse_request_t *req = find_serial(arg, (uint32_t)(cookie >> 32));
    return !req || req->cancelled;
}

/* Stop every queued write of the requests marked cancelled (the callers may
 * free their buffers next). */
static void cancel_marked(terse_ctx_t *ctx, const terse_comm_t *comm)
{
    for (int q = 0; q < comm->size; q++)
        if (comm->world[q] != ctx->rank)
            ctx->tp_ops->cancel(ctx->tp, comm->world[q], drop_cancelled, ctx);
}

static void fail_from(terse_comm_t *comm, uint32_t from)
{
    terse_ctx_t *ctx = comm->ctx;
    int any = 0;
    for (terse_request_t *req = ctx->req_head; req; req = req->next)
        if (req->comm == comm && terse__seq_ge(req->seq, from))
            any = req->cancelled = 1;
    if (!any)
        return;
    /* The failed calls return to the caller, who may free the buffers:
     * nothing queued may read them any more. */
    cancel_marked(ctx, comm);
    for (terse_request_t *req = ctx->req_head, *next; req; req = next) {
        next = req->next;
        if (req->cancelled && req->comm == comm)
            request_finish(req, comm->error);
    }
}

void terse__exec_fail(terse_comm_t *comm, terse_status_t st, int culprit, uint32_t seq, int propagate,
                      const char *fmt, ...)
{
    terse_ctx_t *ctx = comm->ctx;
    int first = comm->error == TERSE_OK;
    if (first) {
        comm->error = st;
        comm->error_seq = seq;
        comm->error_culprit = culprit >= 0 && culprit < comm->size ? comm->world[culprit] : -1;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(comm->error_detail, sizeof(comm->error_detail), fmt, ap);
        va_end(ap);
        if (!comm->internal)
            TERSE_WARN(COLL, "rank %d: %s: %s", comm->rank, terse_strerror(st), comm->error_detail);
    } else if (!terse__seq_ge(seq, comm->error_seq)) {
        comm->error_seq = seq; /* an earlier call cannot finish either */
    }
    fail_from(comm, comm->error_seq);
    if (propagate && first) {
        /* Best effort: every member learns the communicator, the status, the
         * culprit and the first failing call, so all return the same error
         * instead of waiting for their timeout, and calls before it still
         * complete. */
        int w = comm->error_culprit;
        uint32_t c = w < 0 || w >= (int)TERSE_CULPRIT_NONE ? TERSE_CULPRIT_NONE : (uint32_t)w;
        uint64_t id = comm->id;
        uint32_t imm[4] = {TERSE_IMM(TERSE_IMM_ABORT_COMM_HI, (uint32_t)(id >> TERSE_IMM_VAL_BITS)),
                           TERSE_IMM(TERSE_IMM_ABORT_COMM_LO, (uint32_t)id),
                           TERSE_IMM(TERSE_IMM_ABORT_SEQ, seq),
                           TERSE_IMM(TERSE_IMM_ABORT, (c << 8) | ((uint32_t)(-st) & 0xff))};
        for (int q = 0; q < comm->size; q++) {
            int p = comm->world[q];
            if (p != ctx->rank && !ctx->chans[p].lost && !ctx->chans[p].fenced) {
                ctx->chans[p].talked = 1;
                for (int i = 0; i < 4; i++)
                    ctx->tp_ops->write_notify(ctx->tp, p, NULL, 0, 0, imm[i], UINT64_MAX);
            }
        }
    }
}

void terse__exec_cancel(terse_request_t *req)
{
    req->cancelled = 1;
    cancel_marked(req->comm->ctx, req->comm);
    req->freed_by_user = 1;
    request_finish(req, TERSE_ERR_INVALID_ARG);
}

void terse__exec_cancel_comm(terse_comm_t *comm)
{
    terse_ctx_t *ctx = comm->ctx;
    if (!comm->pending)
        return;
    for (terse_request_t *req = ctx->req_head; req; req = req->next)
        if (req->comm == comm)
            req->cancelled = 1;
    cancel_marked(ctx, comm);
    for (terse_request_t *req = ctx->req_head, *next; req; req = next) {
        next = req->next;
        if (req->comm == comm) {
            req->freed_by_user = 1; /* the handle dies with its communicator */
            request_finish(req, TERSE_ERR_INVALID_ARG);
        }
    }
}

void terse__exec_drop_peer(terse_ctx_t *ctx, int p)
{
    terse_chan_t *ch = &ctx->chans[p];
    ch->fenced = 1;
    while (ch->stash_head) {
        terse_stash_t *s = ch->stash_head;
        ch->stash_head = s->next;
        ctx->stash_bytes -= s->hdr.bytes;
        free(s);
    }
    ch->stash_tail = NULL;
    ch->consumed = ch->arrived;
}

/* An abort from world rank `from` for call seq29 (29 bits) of comm.
 * replay: it arrived before comm existed here. */
static void apply_abort(terse_comm_t *comm, int from, uint32_t seq29, uint32_t val, int replay)
{
    terse_ctx_t *ctx = comm->ctx;
    int m = comm->rank_of[from];
    if (m < 0)
        return;
    if (comm->internal && !replay) {
        /* shrink's rounds: an abort of a round this rank already left (it
         * failed or finished it) must not fail the next one */
        uint32_t cur;
        oldest_seq(comm, &cur);
        if (!comm->pending || ((cur - seq29) & TERSE_IMM_VAL_MASK) != 0)
            return;
    }
    uint32_t c = val >> 8;
    terse_status_t st = (terse_status_t)(-(int)(val & 0xff));
    /* Widen the peer's 29-bit sequence number to ours: the nearest value. */
    uint32_t seq = comm->next_seq - ((comm->next_seq - seq29) & TERSE_IMM_VAL_MASK);
    int culprit = c == TERSE_CULPRIT_NONE || c >= (uint32_t)ctx->size ? -1 : comm->rank_of[c];
    /* Forward it (propagate = 1): our later goodbye then reaches every peer
     * only after the abort, so no peer mistakes our exit for the cause. */
    if (culprit == comm->rank)
        terse__exec_fail(comm, st, culprit, seq, 1, "rank %d reported an error involving this rank: %s",
                         m, terse_strerror(st));
    else if (culprit >= 0)
        terse__exec_fail(comm, st, culprit, seq, 1, "rank %d reported: %s (rank %d)", m,
                         terse_strerror(st), culprit);
    else
        terse__exec_fail(comm, st, culprit, seq, 1, "rank %d reported: %s", m, terse_strerror(st));
}

static void on_abort(terse_ctx_t *ctx, int from, uint32_t val)
{
    terse_chan_t *ch = &ctx->chans[from];
    terse_comm_t *comm = terse__ctx_find_comm(ctx, ch->abort_comm);
    if (comm) {
        apply_abort(comm, from, ch->abort_seq, val, 0);
    } else if (!terse__ctx_comm_was(ctx, ch->abort_comm)) {
        /* for a communicator this rank has not created yet: kept for it */
        terse_early_abort_t *e = &ctx->early[ctx->nearly++ % TERSE_EARLY_ABORTS];
        *e = (terse_early_abort_t){ch->abort_comm, from, ch->abort_seq, val};
    }
}

void terse__exec_replay_aborts(terse_comm_t *comm)
{
    terse_ctx_t *ctx = comm->ctx;
    unsigned n = ctx->nearly < TERSE_EARLY_ABORTS ? ctx->nearly : TERSE_EARLY_ABORTS;
    for (unsigned i = 0; i < n; i++)
        if (ctx->early[i].comm == comm->id) {
            ctx->early[i].comm = 0;
            apply_abort(comm, ctx->early[i].from, ctx->early[i].seq, ctx->early[i].val, 1);
        }
}

/* A transport-level error on the connection to p: every communicator with p. */
static void fail_member_comms(terse_ctx_t *ctx, int p, terse_status_t st, const char *msg)
{
    for (terse_comm_t *c = ctx->comms; c; c = c->next_in_ctx)
        if (c->rank_of[p] >= 0) {
            uint32_t oldest;
            oldest_seq(c, &oldest);
            terse__exec_fail(c, st, c->rank_of[p], oldest, 1, "rank %d: %s", c->rank_of[p], msg);
        }
}

void terse__exec_on_event(void *arg, const terse_tp_event_t *ev)
{
    terse_ctx_t *ctx = arg;
    terse_chan_t *ch = &ctx->chans[ev->peer];
    ctx->last_activity = terse__now();
    switch (ev->type) {
    case TERSE_TP_EV_SEND_DONE: {
        if (ev->cookie == UINT64_MAX)
            return;
        terse_request_t *req = find_serial(ctx, (uint32_t)(ev->cookie >> 32));
        uint32_t oi = (uint32_t)ev->cookie;
        if (req && oi < (uint32_t)req->nops && !req->ops[oi].done) {
            op_done(req, &req->ops[oi]);
            req->comm->last_progress = ctx->last_activity;
        }
        return;
    }
    case TERSE_TP_EV_PEER_ERROR:
        /* Not an error by itself: the peer may have finished. The calls that
         * still need it fail in check_departed / issue_sends. */
        ch->lost = 1;
        TERSE_INFO(NET, "world rank %d: %s", ev->peer, ev->msg ? ev->msg : terse_strerror(ev->status));
        if (ev->status == TERSE_ERR_PROTOCOL)
            fail_member_comms(ctx, ev->peer, ev->status, ev->msg ? ev->msg : terse_strerror(ev->status));
        return;
    case TERSE_TP_EV_NOTIFY:
        break;
    }
    uint32_t val = TERSE_IMM_VAL(ev->imm);
    char msg[128];
    switch (TERSE_IMM_TYPE(ev->imm)) {
    case TERSE_IMM_DATA:
        if (val != ch->arrived % (uint64_t)ctx->nslots || ch->arrived - ch->consumed >= (uint64_t)ctx->nslots) {
            snprintf(msg, sizeof(msg), "wrote slot %u out of order or without credit", val);
            fail_member_comms(ctx, ev->peer, TERSE_ERR_PROTOCOL, msg);
            return;
        }
        ch->arrived++;
        ch->last_arrival = ctx->last_activity;
        if (!ch->ready_listed) {
            ch->ready_listed = 1;
            ctx->ready[ctx->nready++] = ev->peer;
        }
        return;
    case TERSE_IMM_CREDIT:
        if (val > ch->sent - ch->credited) {
            snprintf(msg, sizeof(msg), "returned %u credits for %llu outstanding slots", val,
                     (unsigned long long)(ch->sent - ch->credited));
            fail_member_comms(ctx, ev->peer, TERSE_ERR_PROTOCOL, msg);
            return;
        }
        ch->credited += val;
        return;
    case TERSE_IMM_ABORT_COMM_HI:
        ch->abort_comm = (uint64_t)val << TERSE_IMM_VAL_BITS;
        return;
    case TERSE_IMM_ABORT_COMM_LO:
        ch->abort_comm |= val;
        return;
    case TERSE_IMM_ABORT_SEQ:
        ch->abort_seq = val;
        return;
    case TERSE_IMM_ABORT:
        on_abort(ctx, ev->peer, val);
        return;
    case TERSE_IMM_BYE:
        ch->bye = 1;
        return;
    default:
        snprintf(msg, sizeof(msg), "sent an unknown notification %08x", ev->imm);
        fail_member_comms(ctx, ev->peer, TERSE_ERR_PROTOCOL, msg);
        return;
    }
}

/* Fire the timers that are due; returns how many fired and lowers
 * *timeout_ms to the next one. */
static int run_timers(terse_ctx_t *ctx, int *timeout_ms)
{
    int fired = 0;
    double now = terse__now();
    for (terse_request_t *req = ctx->req_head, *next; req; req = next) {
        next = req->next;
        if (req->wake_at <= 0)
            continue;
        if (now >= req->wake_at) {
            req->wake_at = 0;
            req->on_wake(req);
            fired++;
            continue;
        }
        int ms = (int)((req->wake_at - now) * 1e3) + 1;
        if (ms < *timeout_ms)
            *timeout_ms = ms;
    }
    return fired;
}

void terse__exec_progress(terse_ctx_t *ctx, int timeout_ms)
{
    if (!ctx->req_head)
        return;
    ctx->in_progress++;
    int moved = run_timers(ctx, &timeout_ms);
    moved += issue_sends(ctx);
    moved += process_arrivals(ctx);
    moved += run_locals(ctx);
    return_credits(ctx, !moved);
    /* Poll without blocking when we just did work: more may already be ready. */
    int ev = ctx->tp_ops->progress(ctx->tp, moved ? 0 : timeout_ms, terse__exec_on_event, ctx);
    if (ev < 0)
        for (terse_comm_t *c = ctx->comms; c; c = c->next_in_ctx)
            if (c->pending) {
                uint32_t oldest;
                oldest_seq(c, &oldest);
                terse__exec_fail(c, (terse_status_t)ev, -1, oldest, 1, "transport progress failed: %s",
                                 terse_strerror((terse_status_t)ev));
            }
    /* Retire finished requests. */
    for (terse_request_t *req = ctx->req_head, *next; req; req = next) {
        next = req->next;
        if (req->remaining == 0)
            request_finish(req, TERSE_OK);
    }
    if (ctx->req_head)
        check_departed(ctx);
    if (ctx->req_head)
        check_timeout(ctx);
    ctx->in_progress--;
}
