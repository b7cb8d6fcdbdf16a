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

int terse__verbs_post_recvs(verbs_peer_t *p, int n, int peer)
{
    for (int i = 0; i < n; i++) {
        struct ibv_recv_wr wr = {.wr_id = (uint64_t)peer, .sg_list = NULL, .num_sge = 0}, *bad;
        if (ibv_post_recv(p->qp, &wr, &bad) != 0)
            return -1;
    }
    return 0;
}

static int post(terse_tp_t *tp, int peer, struct ibv_send_wr *wr)
{
    struct ibv_send_wr *bad;
    verbs_peer_t *p = &tp->peers[peer];
    if (p->posted - p->completed >= TERSE_VERBS_SEND_DEPTH)
        return ENOMEM;
    int rc = ibv_post_send(p->qp, wr, &bad);
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
        int rc = post(tp, peer, &b->wr);
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
                                         const void *rkey, uint64_t remote_off, uint32_t imm,
                                         uint64_t cookie)
{
    verbs_peer_t *p = &tp->peers[peer];
    if (peer == tp->params.rank || niov < 0 || niov > 2)
        return TERSE_ERR_INVALID_ARG;
    if (p->failed || !p->qp)
        return TERSE_ERR_PEER_FAILED;
    verbs_rkey_t k = {0, 0, 0, 0};
    if (rkey)
        memcpy(&k, rkey, sizeof(k));
    size_t total = 0, unreg = 0;
    for (int i = 0; i < niov; i++) {
        total += iov[i].len;
        if (!iov[i].mr)
            unreg += iov[i].len;
    }
    if (total > UINT32_MAX || (total && remote_off + total > k.len) || unreg > tp->bounce_slot)
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
    wr.wr.rdma.remote_addr = total ? k.addr + remote_off : 0;
    wr.wr.rdma.rkey = k.rkey;
    /* Completions arrive in post order: remember what each one finishes. */
    uint64_t slot = (p->posted + (uint64_t)0) % TERSE_VERBS_SEND_DEPTH;
    int rc = p->backlog ? ENOMEM : post(tp, peer, &wr);
    if (rc == ENOMEM) {
        verbs_pending_t *b = malloc(sizeof(*b));
        if (!b) {
            if (bounce >= 0)
                tp->bounce_free[tp->nbounce_free++] = bounce;
            return TERSE_ERR_NO_MEMORY;
        }
        b->next = NULL;
        b->wr = wr;
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

static int peer_of_qp(terse_tp_t *tp, uint32_t qpn)
{
    for (int r = 0; r < tp->params.size; r++)
        if (tp->peers[r].qp && tp->peers[r].qp->qp_num == qpn)
            return r;
    return -1;
}

static int handle_wc(terse_tp_t *tp, const struct ibv_wc *wc, terse_tp_event_cb cb, void *arg)
{
    int peer = peer_of_qp(tp, wc->qp_num);
    if (peer < 0)
        return 0;
    verbs_peer_t *p = &tp->peers[peer];
    if (wc->status != IBV_WC_SUCCESS) {
        if (!(wc->opcode & IBV_WC_RECV) && p->completed < p->posted) {
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
        if (terse__verbs_post_recvs(p, 1, peer) != 0)
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

/* Disconnects and errors reported by RDMA CM after set-up. */
static int cm_events(terse_tp_t *tp, struct rdma_event_channel *ch, terse_tp_event_cb cb, void *arg)
{
    int n = 0;
    struct rdma_cm_event *ev;
    while (rdma_get_cm_event(ch, &ev) == 0) {
        enum rdma_cm_event_type t = ev->event;
        int peer = ev->id && ev->id != tp->listen_id ? (int)(intptr_t)ev->id->context : -1;
        rdma_ack_cm_event(ev);
        if (peer < 0 || peer >= tp->params.size)
            continue;
        if (t == RDMA_CM_EVENT_DISCONNECTED && !tp->peers[peer].disconnected_at) {
            /* The disconnect travels apart from the data QP and can overtake
             * the peer's last writes (its abort, its goodbye): keep draining
             * the CQ for a moment before calling the peer gone. */
            tp->peers[peer].disconnected_at = terse__now();
        } else if (t == RDMA_CM_EVENT_DEVICE_REMOVAL || t == RDMA_CM_EVENT_CONNECT_ERROR) {
            char why[96];
            snprintf(why, sizeof(why), "connection to rank %d ended (%s)", peer, rdma_event_str(t));
            fail_peer(tp, peer, TERSE_ERR_PEER_FAILED, why, cb, arg);
            n++;
        }
    }
    /* Disconnects whose grace period is over. */
    double now = terse__now();
    for (int r = 0; r < tp->params.size; r++) {
        verbs_peer_t *p = &tp->peers[r];
        if (p->disconnected_at > 0 && !p->failed && now - p->disconnected_at > TERSE_VERBS_DISCONNECT_GRACE) {
            char why[96];
            snprintf(why, sizeof(why), "connection to rank %d ended (%s)", r,
                     rdma_event_str(RDMA_CM_EVENT_DISCONNECTED));
            fail_peer(tp, r, TERSE_ERR_PEER_FAILED, why, cb, arg);
            n++;
        }
    }
    return n;
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
            peer = peer_of_qp(tp, ae.element.qp->qp_num);
        ibv_ack_async_event(&ae);
        TERSE_WARN(NET, "verbs: async event: %s", ibv_event_type_str(t));
        char why[96];
        snprintf(why, sizeof(why), "device event %s", ibv_event_type_str(t));
        if (peer >= 0) {
            fail_peer(tp, peer, TERSE_ERR_PEER_FAILED, why, cb, arg);
            n++;
        } else if (t == IBV_EVENT_DEVICE_FATAL || t == IBV_EVENT_PORT_ERR) {
            for (int r = 0; r < tp->params.size; r++)
                if (tp->peers[r].qp)
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
    return cm_events(tp, tp->listen_ch, cb, arg) + cm_events(tp, tp->active_ch, cb, arg) +
           async_events(tp, cb, arg);
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
    struct pollfd pf[4] = {{tp->comp->fd, POLLIN, 0}, {tp->listen_ch->fd, POLLIN, 0},
                           {tp->active_ch->fd, POLLIN, 0}, {tp->ctx->async_fd, POLLIN, 0}};
    if (poll(pf, 4, timeout_ms) > 0 && (pf[0].revents & POLLIN)) {
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
