/*
 * verbs_ep.c - verbs data path. write_notify is one RDMA WRITE_WITH_IMM
 * (gathering up to two segments; memory the caller did not register is
 * copied into a slot of the shared bounce pool first, and small writes go
 * inline); the peer sees
 * it as a receive completion carrying the immediate. progress polls the CQ
 * and, when told to wait, arms the completion channel and sleeps in poll()
 * together with the RDMA CM channels (which report disconnects).
 */
#include "verbs.h"
#include "../../lib/log.h"
#include "../../lib/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void emit(terse_tp_t *tp, const terse_tp_event_t *ev, terse_tp_event_cb cb, void *arg)
{
    if (cb)
        cb(arg, ev);
    else
        terse__tp_evq_push(&tp->pending, ev);
}

static void fail_peer(terse_tp_t *tp, int peer, terse_status_t st, const char *why, terse_tp_event_cb cb,
                      void *arg)
{
    verbs_peer_t *p = &tp->peers[peer];
    if (p->failed)
        return;
    p->failed = 1;
    TERSE_INFO(NET, "verbs: rank %d: %s", peer, why);
    terse_tp_event_t ev = {.type = TERSE_TP_EV_PEER_ERROR, .peer = peer, .status = st,
                           .msg = cb ? why : "connection lost"};
    emit(tp, &ev, cb, arg);
}

/* Post on our connection, aiming at the peer's slots for us (known once up). */
static int post(terse_tp_t *tp, int peer, struct ibv_send_wr *wr, uint64_t remote_off)
{
    struct ibv_send_wr *bad;
    verbs_peer_t *p = &tp->peers[peer];
    if (p->conn[VC_OUT].state != VC_UP || p->posted - p->completed >= TERSE_VERBS_SEND_DEPTH)
        return ENOMEM;
    size_t total = 0;
    for (int i = 0; i < wr->num_sge; i++)
        total += wr->sg_list[i].length;
    if (total && remote_off + total > p->rlen)
        return EINVAL;
    wr->wr.rdma.remote_addr = total ? p->raddr + remote_off : 0;
    wr->wr.rdma.rkey = p->rkey;
    int rc = ibv_post_send(p->conn[VC_OUT].qp, wr, &bad);
    if (rc == 0)
        p->posted++;
    return rc;
}

/* Post what waited for send-queue room, in order. */
static void flush_backlog(terse_tp_t *tp, int peer, terse_tp_event_cb cb, void *arg)
{
    verbs_peer_t *p = &tp->peers[peer];
    while (p->backlog && !p->failed) {
        verbs_pending_t *b = p->backlog;
        b->wr.sg_list = b->sge;
        int rc = post(tp, peer, &b->wr, b->remote_off);
        if (rc == ENOMEM)
            return;
        if (rc != 0) {
            char why[128];
            snprintf(why, sizeof(why), "posting a write failed: %s", strerror(rc));
            fail_peer(tp, peer, TERSE_ERR_PEER_FAILED, why, cb, arg);
            return;
        }
        p->backlog = b->next;
        if (!p->backlog)
            p->backlog_tail = NULL;
        free(b);
    }
}

static int handle_wc(terse_tp_t *tp, const struct ibv_wc *wc, terse_tp_event_cb cb, void *arg);

/* Reap completions without blocking (used when the bounce pool is empty). */
static void reap(terse_tp_t *tp)
{
    struct ibv_wc wc[16];
    int n = ibv_poll_cq(tp->cq, 16, wc);
    for (int i = 0; i < n; i++)
        handle_wc(tp, &wc[i], NULL, NULL);
}

terse_status_t terse__verbs_write_notify(terse_tp_t *tp, int peer, const terse_tp_iov_t *iov, int niov,
                                         uint64_t remote_off, uint32_t imm, uint64_t cookie)
{
    verbs_peer_t *p = &tp->peers[peer];
    if (peer == tp->params.rank || niov < 0 || niov > 2)
        return TERSE_ERR_INVALID_ARG;
    if (p->failed)
        return TERSE_ERR_PEER_FAILED;
    /* first write to this peer: connect; writes queue until it is up */
    if (p->conn[VC_OUT].state == VC_NONE && terse__verbs_cm_start(tp, peer) != TERSE_OK) {
        char why[96];
        snprintf(why, sizeof(why), "cannot connect to rank %d", peer);
        fail_peer(tp, peer, TERSE_ERR_PEER_FAILED, why, NULL, NULL);
        return TERSE_ERR_PEER_FAILED;
    }
    size_t total = 0, unreg = 0;
    for (int i = 0; i < niov; i++) {
        total += iov[i].len;
        if (!iov[i].mr)
            unreg += iov[i].len;
    }
    if (total > UINT32_MAX || unreg > tp->bounce_slot)
        return TERSE_ERR_INVALID_ARG;
    struct ibv_sge sge[2];
    int nsge = 0, inl = total && total <= tp->max_inline, bounce = -1;
    char *bslot = NULL;
    if (unreg && !inl) {
        /* Copy unregistered bytes into a slot of the shared pool; none free
         * now (after a look at the completions): not now, retry later. */
        if (!tp->nbounce_free)
            reap(tp);
        if (!tp->nbounce_free)
            return TERSE_IN_PROGRESS;
        bounce = tp->bounce_free[--tp->nbounce_free];
        bslot = tp->bounce_all + (size_t)bounce * tp->bounce_slot;
    }
    size_t boff = 0;
    for (int i = 0; i < niov; i++) {
        if (!iov[i].len)
            continue;
        if (inl || iov[i].mr) {
            sge[nsge++] = (struct ibv_sge){(uint64_t)(uintptr_t)iov[i].addr, (uint32_t)iov[i].len,
                                           iov[i].mr ? iov[i].mr->mr->lkey : 0};
        } else {
            memcpy(bslot + boff, iov[i].addr, iov[i].len);
            if (boff == 0)
                sge[nsge++] = (struct ibv_sge){(uint64_t)(uintptr_t)bslot, 0, tp->bounce_mr->lkey};
            sge[nsge - 1].length += (uint32_t)iov[i].len;
            boff += iov[i].len;
        }
    }
    struct ibv_send_wr wr = {.wr_id = cookie, .sg_list = nsge ? sge : NULL, .num_sge = nsge,
                             .opcode = IBV_WR_RDMA_WRITE_WITH_IMM,
                             .send_flags = IBV_SEND_SIGNALED | (inl ? IBV_SEND_INLINE : 0),
                             .imm_data = htonl(imm)};
    /* Completions arrive in post order: remember what each one finishes. */
    uint64_t slot = (p->posted + (uint64_t)0) % TERSE_VERBS_SEND_DEPTH;
    int rc = p->backlog ? ENOMEM : post(tp, peer, &wr, remote_off);
    if (rc == ENOMEM) {
        verbs_pending_t *b = malloc(sizeof(*b));
        if (!b) {
            if (bounce >= 0)
                tp->bounce_free[tp->nbounce_free++] = bounce;
            return TERSE_ERR_NO_MEMORY;
        }
        b->next = NULL;
        b->wr = wr;
        b->remote_off = remote_off;
        memcpy(b->sge, sge, sizeof(sge));
        if (p->backlog_tail)
            p->backlog_tail->next = b;
        else
            p->backlog = b;
        p->backlog_tail = b;
        /* record in post order: it will be posted after everything before it */
        uint64_t pos = p->posted;
        for (verbs_pending_t *q = p->backlog; q != b; q = q->next)
            pos++;
        p->inflight[pos % TERSE_VERBS_SEND_DEPTH] = (verbs_inflight_t){cookie, bounce};
        return TERSE_OK;
    }
    if (rc != 0) {
        if (bounce >= 0)
            tp->bounce_free[tp->nbounce_free++] = bounce;
        TERSE_INFO(NET, "verbs: ibv_post_send to rank %d: %s", peer, strerror(rc));
        return TERSE_ERR_PEER_FAILED;
    }
    p->inflight[slot] = (verbs_inflight_t){cookie, bounce};
    return TERSE_OK;
}

static int handle_wc(terse_tp_t *tp, const struct ibv_wc *wc, terse_tp_event_cb cb, void *arg)
{
    int peer = terse__verbs_qp_peer(tp, wc->qp_num);
    if (peer < 0)
        return 0;
    verbs_peer_t *p = &tp->peers[peer];
    if (wc->status != IBV_WC_SUCCESS) {
        /* a failed send on our connection (the opcode of an error completion
         * is undefined: the QP tells) - not a receive flushed from the peer's */
        int is_send = p->conn[VC_OUT].qp && wc->qp_num == p->conn[VC_OUT].qp->qp_num;
        if (is_send && p->completed < p->posted && p->inflight) {
            verbs_inflight_t *f = &p->inflight[p->completed % TERSE_VERBS_SEND_DEPTH];
            if (f->bounce >= 0)
                tp->bounce_free[tp->nbounce_free++] = f->bounce;
            f->bounce = -1;
            p->completed++;
        }
        char why[160];
        snprintf(why, sizeof(why), "work completion error: %s (vendor error 0x%x)",
                 ibv_wc_status_str(wc->status), wc->vendor_err);
        fail_peer(tp, peer, wc->status == IBV_WC_REM_ACCESS_ERR ? TERSE_ERR_PROTOCOL : TERSE_ERR_PEER_FAILED,
                  why, cb, arg);
        return 1;
    }
    if (wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM) {
        terse_tp_event_t ev = {.type = TERSE_TP_EV_NOTIFY, .peer = peer, .imm = ntohl(wc->imm_data)};
        if (!p->conn[VC_IN].qp || terse__verbs_post_recvs(p->conn[VC_IN].qp, 1, peer) != 0)
            fail_peer(tp, peer, TERSE_ERR_PEER_FAILED, "cannot re-post a receive", cb, arg);
        emit(tp, &ev, cb, arg);
        return 1;
    }
    if (wc->opcode == IBV_WC_RDMA_WRITE) {
        verbs_inflight_t *f = &p->inflight[p->completed % TERSE_VERBS_SEND_DEPTH];
        p->completed++;
        if (f->bounce >= 0)
            tp->bounce_free[tp->nbounce_free++] = f->bounce;
        terse_tp_event_t ev = {.type = TERSE_TP_EV_SEND_DONE, .peer = peer, .cookie = f->cookie};
        emit(tp, &ev, cb, arg);
        flush_backlog(tp, peer, cb, arg);
        return 1;
    }
    return 0;
}

/* Asynchronous device events: fatal ones end the affected connections. */
static int async_events(terse_tp_t *tp, terse_tp_event_cb cb, void *arg)
{
    struct ibv_async_event ae;
    int n = 0;
    while (ibv_get_async_event(tp->ctx, &ae) == 0) {
        enum ibv_event_type t = ae.event_type;
        int peer = -1;
        if (t == IBV_EVENT_QP_FATAL || t == IBV_EVENT_QP_REQ_ERR || t == IBV_EVENT_QP_ACCESS_ERR ||
            t == IBV_EVENT_QP_LAST_WQE_REACHED)
            peer = terse__verbs_qp_peer(tp, ae.element.qp->qp_num);
        ibv_ack_async_event(&ae);
        TERSE_WARN(NET, "verbs: async event: %s", ibv_event_type_str(t));
        char why[96];
        snprintf(why, sizeof(why), "device event %s", ibv_event_type_str(t));
        if (peer >= 0) {
            fail_peer(tp, peer, TERSE_ERR_PEER_FAILED, why, cb, arg);
            n++;
        } else if (t == IBV_EVENT_DEVICE_FATAL || t == IBV_EVENT_PORT_ERR) {
            for (int r = 0; r < tp->params.size; r++)
                if (tp->peers[r].conn[VC_OUT].qp || tp->peers[r].conn[VC_IN].qp)
                    fail_peer(tp, r, TERSE_ERR_PEER_FAILED, why, cb, arg);
            n++;
        }
    }
    return n;
}

/* Drain the CQ (bounded). Returns events, or -1 on a CQ error. */
static int drain_cq(terse_tp_t *tp, terse_tp_event_cb cb, void *arg)
{
    struct ibv_wc wc[32];
    int events = 0;
    for (int round = 0; round < 64; round++) {
        int n = ibv_poll_cq(tp->cq, 32, wc);
        if (n < 0)
            return -1;
        for (int i = 0; i < n; i++)
            events += handle_wc(tp, &wc[i], cb, arg);
        if (n < 32)
            break;
    }
    return events;
}

/* Connection-manager and device events come after the CQ is drained: a peer's
 * last writes (an abort, a goodbye) complete here before its disconnect can
 * be seen, so they are never overtaken by it. */
static int side_events(terse_tp_t *tp, terse_tp_event_cb cb, void *arg)
{
    int n = terse__verbs_cm_events(tp, fail_peer, cb, arg) + async_events(tp, cb, arg);
    /* connections that came up: their queued writes go now */
    for (int r = 0; r < tp->params.size; r++)
        if (tp->peers[r].flush) {
            tp->peers[r].flush = 0;
            flush_backlog(tp, r, cb, arg);
        }
    return n;
}

int terse__verbs_progress(terse_tp_t *tp, int timeout_ms, terse_tp_event_cb cb, void *arg)
{
    int events = 0;
    if (cb)
        events += terse__tp_evq_deliver(&tp->pending, cb, arg);
    int n = drain_cq(tp, cb, arg);
    if (n < 0)
        return TERSE_ERR_SYSTEM;
    events += n + side_events(tp, cb, arg);
    if (events || timeout_ms <= 0)
        return events;
    /* Nothing ready: arm the CQ, re-check (a completion may have raced the
     * arming), then sleep until a completion or a CM/device event arrives. */
    ibv_req_notify_cq(tp->cq, 0);
    if ((n = drain_cq(tp, cb, arg)) != 0)
        return n;
    struct pollfd pf[5] = {{tp->comp->fd, POLLIN, 0}, {tp->listen_ch->fd, POLLIN, 0},
                           {tp->active_ch->fd, POLLIN, 0}, {tp->ctx->async_fd, POLLIN, 0},
                           {tp->params.wake_fd, POLLIN, 0}}; /* wake_fd < 0: ignored by poll */
    if (poll(pf, 5, timeout_ms) > 0 && (pf[0].revents & POLLIN)) {
        struct ibv_cq *cq;
        void *ctx;
        if (ibv_get_cq_event(tp->comp, &cq, &ctx) == 0)
            ibv_ack_cq_events(cq, 1);
    }
    /* whatever woke us, the CQ first */
    if ((n = drain_cq(tp, cb, arg)) < 0)
        return TERSE_ERR_SYSTEM;
    return n + side_events(tp, cb, arg);
}

void terse__verbs_cancel(terse_tp_t *tp, int peer, terse_tp_drop_fn drop, void *arg)
{
    /* Posted and queued writes read bounce slots or memory the caller
     * registered: nothing to copy. They stay in order (the peer counts on
     * every slot it was promised); their completions name no request. */
    (void)tp;
    (void)peer;
    (void)drop;
    (void)arg;
}
