/*
 * verbs_cm.c - verbs connections on first use, through RDMA CM events.
 *
 * The first write to a peer starts our connection to it (`out`): resolve
 * address, resolve route, create the QP, connect with a hello (rank, size,
 * secret hash) in the private data. The peer, on the request, registers its
 * receive slots for us (asked of the layer above), creates its QP (`in`,
 * with the receives that absorb our notifications) and accepts with the
 * slots' address, key and length in the private data; once established, our
 * queued writes go. Each direction has its own QP, as each has its own
 * socket over TCP: no race when two ranks start talking at once, and memory
 * and QPs grow with the peers that talk, not with the job.
 */
#include "verbs.h"
#include "../../lib/log.h"
#include "../../lib/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- QP number -> peer ------------------------------------------------ */

static size_t qp_slot(const terse_tp_t *tp, uint32_t qpn)
{
    return (size_t)((qpn * 2654435761u) & (uint32_t)(tp->qp_cap - 1));
}

int terse__verbs_qp_peer(const terse_tp_t *tp, uint32_t qpn)
{
    if (!tp->qp_cap)
        return -1;
    for (size_t i = qp_slot(tp, qpn), k = 0; k < tp->qp_cap; i = (i + 1) & (tp->qp_cap - 1), k++) {
        if (tp->qp_peers[i] == -1)
            return -1;
        if (tp->qp_keys[i] == qpn && tp->qp_peers[i] >= 0)
            return tp->qp_peers[i];
    }
    return -1;
}

static int qp_put(terse_tp_t *tp, uint32_t qpn, int peer)
{
    if (2 * (tp->qp_n + 1) > tp->qp_cap) {
        size_t cap = tp->qp_cap ? 2 * tp->qp_cap : 64;
        uint32_t *keys = malloc(cap * sizeof(*keys));
        int *peers = malloc(cap * sizeof(*peers));
        if (!keys || !peers) {
            free(keys), free(peers);
            return -1;
        }
        for (size_t i = 0; i < cap; i++)
            peers[i] = -1;
        uint32_t *ok = tp->qp_keys;
        int *op = tp->qp_peers;
        size_t ocap = tp->qp_cap;
        tp->qp_keys = keys, tp->qp_peers = peers, tp->qp_cap = cap, tp->qp_n = 0;
        for (size_t i = 0; i < ocap; i++)
            if (op[i] >= 0)
                qp_put(tp, ok[i], op[i]);
        free(ok), free(op);
    }
    size_t i = qp_slot(tp, qpn);
    while (tp->qp_peers[i] >= 0)
        i = (i + 1) & (tp->qp_cap - 1);
    tp->qp_keys[i] = qpn;
    tp->qp_peers[i] = peer;
    tp->qp_n++;
    return 0;
}

/* ---- queue pairs ------------------------------------------------------- */

int terse__verbs_post_recvs(struct ibv_qp *qp, int n, int peer)
{
    for (int i = 0; i < n; i++) {
        struct ibv_recv_wr wr = {.wr_id = (uint64_t)peer, .sg_list = NULL, .num_sge = 0}, *bad;
        if (ibv_post_recv(qp, &wr, &bad) != 0)
            return -1;
    }
    return 0;
}

static void *id_ctx(int peer, int dir) { return (void *)(intptr_t)(peer * 2 + dir); }

static terse_status_t make_qp(terse_tp_t *tp, struct rdma_cm_id *id, int peer, int dir)
{
    /* our own connection only sends; the peer's only receives */
    struct ibv_qp_init_attr a = {
        .send_cq = tp->cq, .recv_cq = tp->cq, .qp_type = IBV_QPT_RC, .sq_sig_all = 0,
        .cap = {.max_send_wr = dir == VC_OUT ? TERSE_VERBS_SEND_DEPTH : 16,
                .max_recv_wr = dir == VC_IN ? TERSE_VERBS_RECV_DEPTH : 1,
                .max_send_sge = 2, .max_recv_sge = 1, .max_inline_data = 64}};
    if (rdma_create_qp(id, tp->pd, &a) != 0) {
        a.cap.max_inline_data = 0; /* some devices have no inline support */
        if (rdma_create_qp(id, tp->pd, &a) != 0) {
            TERSE_WARN(NET, "verbs: cannot create a QP for rank %d: %s", peer, strerror(errno));
            return TERSE_ERR_SYSTEM;
        }
    }
    if (dir == VC_OUT)
        tp->max_inline = a.cap.max_inline_data;
    verbs_conn_t *c = &tp->peers[peer].conn[dir];
    c->id = id;
    c->qp = id->qp;
    id->context = id_ctx(peer, dir);
    uint8_t timeout = (uint8_t)tp->params.ib_timeout;
    rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &timeout, sizeof(timeout));
    if (qp_put(tp, id->qp->qp_num, peer) != 0)
        return TERSE_ERR_NO_MEMORY;
    if (dir == VC_IN && terse__verbs_post_recvs(id->qp, TERSE_VERBS_RECV_DEPTH, peer) != 0) {
        TERSE_WARN(NET, "verbs: cannot post receives for rank %d: %s", peer, strerror(errno));
        return TERSE_ERR_SYSTEM;
    }
    return TERSE_OK;
}

static struct rdma_conn_param conn_param(terse_tp_t *tp, const void *pd, size_t len)
{
    struct rdma_conn_param cp = {.private_data = pd, .private_data_len = (uint8_t)len,
                                 .responder_resources = 0, .initiator_depth = 0,
                                 .retry_count = (uint8_t)tp->params.ib_retry, .rnr_retry_count = 7};
    return cp;
}

static void conn_destroy(terse_tp_t *tp, verbs_conn_t *c)
{
    (void)tp;
    if (!c->id)
        return;
    if (c->state == VC_UP)
        rdma_disconnect(c->id);
    if (c->id->qp)
        rdma_destroy_qp(c->id);
    rdma_destroy_id(c->id);
    c->id = NULL;
    c->qp = NULL;
}

/* ---- our side: connect ------------------------------------------------- */

terse_status_t terse__verbs_cm_start(terse_tp_t *tp, int peer)
{
    verbs_peer_t *p = &tp->peers[peer];
    verbs_conn_t *c = &p->conn[VC_OUT];
    if (!p->inflight && !(p->inflight = calloc(TERSE_VERBS_SEND_DEPTH, sizeof(verbs_inflight_t))))
        return TERSE_ERR_NO_MEMORY;
    struct rdma_cm_id *id;
    if (rdma_create_id(tp->active_ch, &id, id_ctx(peer, VC_OUT), RDMA_PS_TCP) != 0)
        return TERSE_ERR_SYSTEM;
    struct sockaddr_in src = tp->addr;
    src.sin_port = 0;
    if (rdma_resolve_addr(id, (struct sockaddr *)&src, (struct sockaddr *)&tp->addrs[peer], 5000) != 0) {
        TERSE_INFO(NET, "verbs: cannot resolve rank %d: %s", peer, strerror(errno));
        rdma_destroy_id(id);
        return TERSE_ERR_PEER_FAILED;
    }
    c->id = id;
    c->state = VC_RESOLVING_ADDR;
    return TERSE_OK;
}

static terse_status_t on_active(terse_tp_t *tp, int peer, struct rdma_cm_event *ev, const verbs_accept_t *acc)
{
    verbs_peer_t *p = &tp->peers[peer];
    verbs_conn_t *c = &p->conn[VC_OUT];
    switch (ev->event) {
    case RDMA_CM_EVENT_ADDR_RESOLVED:
        c->state = VC_RESOLVING_ROUTE;
        return rdma_resolve_route(c->id, 5000) == 0 ? TERSE_OK : TERSE_ERR_PEER_FAILED;
    case RDMA_CM_EVENT_ROUTE_RESOLVED: {
        terse_status_t st = make_qp(tp, c->id, peer, VC_OUT);
        if (st != TERSE_OK)
            return st;
        verbs_hello_t h = {TERSE_VERBS_MAGIC, tp->params.rank, tp->params.size, 0, tp->params.secret_hash};
        struct rdma_conn_param cp = conn_param(tp, &h, sizeof(h));
        c->state = VC_CONNECTING;
        return rdma_connect(c->id, &cp) == 0 ? TERSE_OK : TERSE_ERR_PEER_FAILED;
    }
    case RDMA_CM_EVENT_ESTABLISHED:
        if (!acc || acc->magic != TERSE_VERBS_MAGIC || acc->status != TERSE_OK || !acc->len) {
            TERSE_WARN(NET, "verbs: rank %d accepted without its receive slots", peer);
            return TERSE_ERR_PROTOCOL;
        }
        p->raddr = acc->addr, p->rkey = acc->rkey, p->rlen = acc->len;
        c->state = VC_UP;
        tp->nup++;
        p->flush = 1;
        return TERSE_OK;
    case RDMA_CM_EVENT_REJECTED:
        TERSE_WARN(NET, "verbs: rank %d refused our connection: %s", peer,
                   acc && acc->magic == TERSE_VERBS_MAGIC ? terse_strerror((terse_status_t)acc->status) : "no reason");
        return acc && acc->magic == TERSE_VERBS_MAGIC && acc->status != TERSE_OK ? (terse_status_t)acc->status
                                                                                : TERSE_ERR_AUTH;
    default:
        TERSE_INFO(NET, "verbs: connecting to rank %d: %s (status %d)", peer, rdma_event_str(ev->event), ev->status);
        return TERSE_ERR_PEER_FAILED;
    }
}

/* ---- the peer's side: accept ------------------------------------------- */

static void reject(struct rdma_cm_id *id, terse_status_t st)
{
    verbs_accept_t rej = {TERSE_VERBS_MAGIC, st, 0, 0, 0, 0};
    if (id->qp)
        rdma_destroy_qp(id);
    rdma_reject(id, &rej, sizeof(rej));
}

static void on_request(terse_tp_t *tp, struct rdma_cm_event *ev)
{
    verbs_hello_t h = {0};
    if (ev->param.conn.private_data && ev->param.conn.private_data_len >= sizeof(h))
        memcpy(&h, ev->param.conn.private_data, sizeof(h));
    terse_status_t st = terse__tp_admit(&tp->params, h.magic == TERSE_VERBS_MAGIC, h.secret_hash, h.rank, h.size);
    if (st == TERSE_OK && tp->peers[h.rank].conn[VC_IN].id)
        st = TERSE_ERR_AUTH; /* that rank is already here */
    if (st != TERSE_OK) {
        TERSE_WARN(NET, "verbs: rejected a connection claiming rank %d of %d: %s", h.rank, h.size, terse_strerror(st));
        reject(ev->id, st);
        return;
    }
    verbs_peer_t *p = &tp->peers[h.rank];
    if (!p->slots_mr) {
        size_t len = 0;
        void *slots = tp->params.slots(tp->params.place_arg, h.rank, &len);
        p->slots_mr = slots ? ibv_reg_mr(tp->pd, slots, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE) : NULL;
        if (!p->slots_mr) {
            st = !slots ? TERSE_ERR_NO_MEMORY
                        : (errno == ENOMEM || errno == EPERM || errno == EAGAIN) ? TERSE_ERR_MEMLOCK : TERSE_ERR_SYSTEM;
            TERSE_WARN(NET, "verbs: cannot register receive slots for rank %d (%zu bytes): %s%s", h.rank, len,
                       terse_strerror(st), st == TERSE_ERR_MEMLOCK ? " - raise ulimit -l" : "");
            reject(ev->id, st);
            return;
        }
        tp->pinned += len;
    }
    if ((st = make_qp(tp, ev->id, h.rank, VC_IN)) != TERSE_OK) {
        p->conn[VC_IN].id = NULL, p->conn[VC_IN].qp = NULL;
        reject(ev->id, st);
        return;
    }
    verbs_accept_t acc = {TERSE_VERBS_MAGIC, TERSE_OK, (uint64_t)(uintptr_t)p->slots_mr->addr, p->slots_mr->rkey, 0,
                          p->slots_mr->length};
    struct rdma_conn_param cp = conn_param(tp, &acc, sizeof(acc));
    p->conn[VC_IN].state = VC_CONNECTING;
    if (rdma_accept(ev->id, &cp) != 0)
        TERSE_WARN(NET, "verbs: accept of rank %d failed: %s", h.rank, strerror(errno));
}

/* ---- events ------------------------------------------------------------ */

static int channel_events(terse_tp_t *tp, struct rdma_event_channel *ch, verbs_fail_fn fail, terse_tp_event_cb cb,
                          void *arg)
{
    int n = 0;
    struct rdma_cm_event *ev;
    while (rdma_get_cm_event(ch, &ev) == 0) {
        if (ev->event == RDMA_CM_EVENT_CONNECT_REQUEST) {
            on_request(tp, ev);
            rdma_ack_cm_event(ev);
            continue;
        }
        intptr_t v = ev->id && ev->id != tp->listen_id ? (intptr_t)ev->id->context : -1;
        int peer = v >= 0 ? (int)(v / 2) : -1, dir = (int)(v % 2);
        if (peer < 0 || peer >= tp->params.size) {
            rdma_ack_cm_event(ev);
            continue;
        }
        verbs_peer_t *p = &tp->peers[peer];
        verbs_accept_t acc, *accp = NULL;
        if (ev->param.conn.private_data && ev->param.conn.private_data_len >= sizeof(acc)) {
            memcpy(&acc, ev->param.conn.private_data, sizeof(acc));
            accp = &acc;
        }
        enum rdma_cm_event_type t = ev->event;
        terse_status_t st = TERSE_OK;
        if (t == RDMA_CM_EVENT_DISCONNECTED || t == RDMA_CM_EVENT_TIMEWAIT_EXIT) {
            /* The disconnect travels apart from the data QP and can overtake
             * the peer's last writes (its abort, its goodbye): keep draining
             * the CQ for a moment before calling the peer gone. */
            if (t == RDMA_CM_EVENT_DISCONNECTED && !p->disconnected_at)
                p->disconnected_at = terse__now();
        } else if (t == RDMA_CM_EVENT_DEVICE_REMOVAL) {
            st = TERSE_ERR_PEER_FAILED;
        } else if (dir == VC_IN) {
            if (t == RDMA_CM_EVENT_ESTABLISHED) {
                p->conn[VC_IN].state = VC_UP;
                tp->nup++;
            } else if (t != RDMA_CM_EVENT_CONNECT_RESPONSE) {
                st = TERSE_ERR_PEER_FAILED;
            }
        } else if (p->conn[VC_OUT].state != VC_UP || t != RDMA_CM_EVENT_ESTABLISHED) {
            st = on_active(tp, peer, ev, accp);
        }
        rdma_ack_cm_event(ev);
        if (st != TERSE_OK) {
            char why[128];
            snprintf(why, sizeof(why), "connection to rank %d failed (%s)", peer, rdma_event_str(t));
            fail(tp, peer, st, why, cb, arg);
            n++;
        }
    }
    return n;
}

int terse__verbs_cm_events(terse_tp_t *tp, verbs_fail_fn fail, terse_tp_event_cb cb, void *arg)
{
    int n = channel_events(tp, tp->listen_ch, fail, cb, arg) + channel_events(tp, tp->active_ch, fail, cb, arg);
    /* Disconnects whose grace period is over. */
    double now = terse__now();
    for (int r = 0; r < tp->params.size; r++) {
        verbs_peer_t *p = &tp->peers[r];
        if (p->disconnected_at > 0 && !p->failed && now - p->disconnected_at > TERSE_VERBS_DISCONNECT_GRACE) {
            char why[96];
            snprintf(why, sizeof(why), "connection to rank %d ended (%s)", r,
                     rdma_event_str(RDMA_CM_EVENT_DISCONNECTED));
            fail(tp, r, TERSE_ERR_PEER_FAILED, why, cb, arg);
            n++;
        }
    }
    return n;
}

void terse__verbs_cm_close(terse_tp_t *tp)
{
    for (int r = 0; r < tp->params.size; r++) {
        verbs_peer_t *p = &tp->peers[r];
        conn_destroy(tp, &p->conn[VC_OUT]);
        conn_destroy(tp, &p->conn[VC_IN]);
        if (p->slots_mr)
            ibv_dereg_mr(p->slots_mr);
        p->slots_mr = NULL;
        free(p->inflight);
        p->inflight = NULL;
    }
    free(tp->qp_keys);
    free(tp->qp_peers);
    tp->qp_keys = NULL, tp->qp_peers = NULL, tp->qp_cap = tp->qp_n = 0;
}
