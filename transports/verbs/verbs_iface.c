/*
 * verbs_iface.c - verbs transport set-up: device, protection domain, one CQ
 * with a completion channel (so an idle rank sleeps), RDMA CM connections
 * carrying rank and job-secret hash in the private data (foreign, duplicate
 * or mis-sized peers are rejected), memory registration, orderly close.
 */
#include "verbs.h"
#include "../../lib/log.h"
#include "../../lib/net.h"
#include "../../lib/topology.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static terse_status_t memlock_error(size_t len)
{
    struct rlimit rl;
    getrlimit(RLIMIT_MEMLOCK, &rl);
    TERSE_WARN(NET, "verbs: cannot register %zu bytes: the locked-memory limit is %s%llu KiB; "
                    "raise it (ulimit -l unlimited, or memlock in /etc/security/limits.conf)",
               len, rl.rlim_cur == RLIM_INFINITY ? "unlimited? " : "",
               (unsigned long long)(rl.rlim_cur == RLIM_INFINITY ? 0 : rl.rlim_cur / 1024));
    return TERSE_ERR_MEMLOCK;
}

static void tp_free(terse_tp_t *tp)
{
    if (tp->bounce_mr)
        ibv_dereg_mr(tp->bounce_mr);
    terse__topo_free(tp->bounce_all, tp->bounce_len);
    if (tp->cq)
        ibv_destroy_cq(tp->cq);
    if (tp->comp)
        ibv_destroy_comp_channel(tp->comp);
    if (tp->pd)
        ibv_dealloc_pd(tp->pd);
    if (tp->listen_id)
        rdma_destroy_id(tp->listen_id);
    if (tp->listen_ch)
        rdma_destroy_event_channel(tp->listen_ch);
    if (tp->active_ch)
        rdma_destroy_event_channel(tp->active_ch);
    free(tp->peers);
    free(tp->bounce_free);
    terse__tp_evq_free(&tp->pending);
    free(tp);
}

static terse_status_t verbs_open(const terse_tp_params_t *params, terse_tp_t **out)
{
    terse_tp_t *tp = calloc(1, sizeof(*tp));
    if (!tp)
        return TERSE_ERR_NO_MEMORY;
    tp->params = *params;
    terse_status_t st = terse__verbs_pick_address(params, &tp->addr);
    if (st != TERSE_OK) {
        tp_free(tp);
        return st;
    }
    tp->peers = calloc((size_t)params->size, sizeof(verbs_peer_t));
    tp->listen_ch = rdma_create_event_channel();
    tp->active_ch = rdma_create_event_channel();
    if (!tp->peers || !tp->listen_ch || !tp->active_ch ||
        rdma_create_id(tp->listen_ch, &tp->listen_id, NULL, RDMA_PS_TCP) != 0) {
        TERSE_WARN(NET, "verbs: cannot create RDMA CM objects: %s", strerror(errno));
        tp_free(tp);
        return TERSE_ERR_SYSTEM;
    }
    char ip[32];
    inet_ntop(AF_INET, &tp->addr.sin_addr, ip, sizeof(ip));
    if (rdma_bind_addr(tp->listen_id, (struct sockaddr *)&tp->addr) != 0 || rdma_listen(tp->listen_id, 128) != 0 ||
        !tp->listen_id->verbs) {
        TERSE_WARN(NET, "verbs: cannot listen on %s (not an address of an RDMA device?): %s", ip,
                   strerror(errno));
        tp_free(tp);
        return TERSE_ERR_NO_DEVICE;
    }
    tp->addr.sin_port = rdma_get_src_port(tp->listen_id);
    tp->ctx = tp->listen_id->verbs;
    struct ibv_device_attr da;
    ibv_query_device(tp->ctx, &da);
    int cqe = params->size * (TERSE_VERBS_SEND_DEPTH + TERSE_VERBS_RECV_DEPTH);
    if (cqe > da.max_cqe)
        cqe = da.max_cqe;
    tp->pd = ibv_alloc_pd(tp->ctx);
    tp->comp = tp->pd ? ibv_create_comp_channel(tp->ctx) : NULL;
    tp->cq = tp->comp ? ibv_create_cq(tp->ctx, cqe, NULL, tp->comp, 0) : NULL;
    if (!tp->cq) {
        TERSE_WARN(NET, "verbs: cannot create PD/CQ on %s: %s", ibv_get_device_name(tp->ctx->device),
                   strerror(errno));
        tp_free(tp);
        return TERSE_ERR_SYSTEM;
    }
    set_nonblock(tp->comp->fd);
    set_nonblock(tp->ctx->async_fd);
    set_nonblock(tp->listen_ch->fd);
    set_nonblock(tp->active_ch->fd);
    /* Bounce slots: payloads from memory the caller did not register are
     * copied here. One pool for all peers, of a size that does not grow with
     * the job: when it is empty, write_notify says "not now" and the layer
     * above retries once completions have returned slots. */
    tp->bounce_slot = (params->max_msg + 63) & ~(size_t)63;
    tp->bounce_count = params->bounce_slots > 0 ? params->bounce_slots : 2 * params->max_outstanding + 4;
    size_t blen = (size_t)tp->bounce_count * tp->bounce_slot;
    tp->bounce_free = malloc(sizeof(int) * (size_t)tp->bounce_count);
    if (!tp->bounce_free) {
        tp_free(tp);
        return TERSE_ERR_NO_MEMORY;
    }
    for (int i = 0; i < tp->bounce_count; i++)
        tp->bounce_free[tp->nbounce_free++] = tp->bounce_count - 1 - i;
    tp->bounce_len = blen;
    tp->bounce_all = terse__topo_alloc(ibv_get_device_name(tp->ctx->device), blen);
    if (!tp->bounce_all) {
        tp_free(tp);
        return TERSE_ERR_NO_MEMORY;
    }
    tp->bounce_mr = ibv_reg_mr(tp->pd, tp->bounce_all, blen, IBV_ACCESS_LOCAL_WRITE);
    if (!tp->bounce_mr) {
        st = (errno == ENOMEM || errno == EPERM || errno == EAGAIN) ? memlock_error(blen) : TERSE_ERR_SYSTEM;
        tp_free(tp);
        return st;
    }
    tp->pinned += blen;
    TERSE_INFO(NET, "verbs: %s at %s:%d", ibv_get_device_name(tp->ctx->device), ip, ntohs(tp->addr.sin_port));
    *out = tp;
    return TERSE_OK;
}

static terse_status_t verbs_address(terse_tp_t *tp, void *blob, size_t *len)
{
    verbs_addr_t a = {.sin = tp->addr};
    memcpy(blob, &a, sizeof(a));
    *len = sizeof(a);
    return TERSE_OK;
}

/* Next CM event on ch before the deadline; the caller acks it. */
static terse_status_t next_event(struct rdma_event_channel *ch, double deadline, struct rdma_cm_event **ev)
{
    for (;;) {
        if (rdma_get_cm_event(ch, ev) == 0)
            return TERSE_OK;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return TERSE_ERR_SYSTEM;
        double left = deadline - terse__now();
        if (left <= 0)
            return TERSE_ERR_TIMEOUT;
        struct pollfd pf = {.fd = ch->fd, .events = POLLIN};
        poll(&pf, 1, left > 1 ? 1000 : (int)(left * 1000) + 1);
    }
}

static terse_status_t expect_event(struct rdma_event_channel *ch, enum rdma_cm_event_type want,
                                   double deadline, int peer, verbs_hello_t *reject)
{
    struct rdma_cm_event *ev;
    terse_status_t st = next_event(ch, deadline, &ev);
    if (st != TERSE_OK)
        return st;
    enum rdma_cm_event_type got = ev->event;
    if (got == RDMA_CM_EVENT_REJECTED && reject && ev->param.conn.private_data &&
        ev->param.conn.private_data_len >= sizeof(*reject))
        memcpy(reject, ev->param.conn.private_data, sizeof(*reject));
    int status = ev->status;
    rdma_ack_cm_event(ev);
    if (got == want)
        return TERSE_OK;
    TERSE_WARN(NET, "verbs: connecting to rank %d: %s (status %d), expected %s", peer, rdma_event_str(got),
               status, rdma_event_str(want));
    if (got == RDMA_CM_EVENT_REJECTED)
        return reject && reject->magic == TERSE_VERBS_MAGIC ? (terse_status_t)reject->status : TERSE_ERR_AUTH;
    return got == RDMA_CM_EVENT_UNREACHABLE ? TERSE_ERR_TIMEOUT : TERSE_ERR_PEER_FAILED;
}

static terse_status_t make_qp(terse_tp_t *tp, struct rdma_cm_id *id, int peer)
{
    struct ibv_qp_init_attr a = {
        .send_cq = tp->cq, .recv_cq = tp->cq, .qp_type = IBV_QPT_RC, .sq_sig_all = 0,
        .cap = {.max_send_wr = TERSE_VERBS_SEND_DEPTH, .max_recv_wr = TERSE_VERBS_RECV_DEPTH,
                .max_send_sge = 2, .max_recv_sge = 1, .max_inline_data = 64}};
    if (rdma_create_qp(id, tp->pd, &a) != 0) {
        a.cap.max_inline_data = 0; /* some devices have no inline support */
        if (rdma_create_qp(id, tp->pd, &a) != 0) {
            TERSE_WARN(NET, "verbs: cannot create a QP for rank %d: %s", peer, strerror(errno));
            return TERSE_ERR_SYSTEM;
        }
    }
    tp->max_inline = a.cap.max_inline_data;
    verbs_peer_t *p = &tp->peers[peer];
    p->id = id;
    p->qp = id->qp;
    id->context = (void *)(intptr_t)peer;
    uint8_t timeout = (uint8_t)tp->params.ib_timeout;
    rdma_set_option(id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &timeout, sizeof(timeout));
    if (terse__verbs_post_recvs(p, TERSE_VERBS_RECV_DEPTH, peer) != 0) {
        TERSE_WARN(NET, "verbs: cannot post receives for rank %d: %s", peer, strerror(errno));
        return TERSE_ERR_SYSTEM;
    }
    return TERSE_OK;
}

static struct rdma_conn_param conn_param(terse_tp_t *tp, verbs_hello_t *h)
{
    struct rdma_conn_param cp = {.private_data = h, .private_data_len = sizeof(*h),
                                 .responder_resources = 0, .initiator_depth = 0,
                                 .retry_count = (uint8_t)tp->params.ib_retry, .rnr_retry_count = 7};
    return cp;
}

static terse_status_t connect_down(terse_tp_t *tp, int r, const verbs_addr_t *a, double deadline)
{
    struct rdma_cm_id *id;
    verbs_hello_t h = {TERSE_VERBS_MAGIC, tp->params.rank, tp->params.size, 0, tp->params.secret_hash}, rej = {0};
    if (rdma_create_id(tp->active_ch, &id, NULL, RDMA_PS_TCP) != 0)
        return TERSE_ERR_SYSTEM;
    struct sockaddr_in src = tp->addr;
    src.sin_port = 0;
    terse_status_t st = TERSE_ERR_SYSTEM;
    if (rdma_resolve_addr(id, (struct sockaddr *)&src, (struct sockaddr *)&a->sin, 5000) == 0 &&
        (st = expect_event(tp->active_ch, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, r, NULL)) == TERSE_OK &&
        (st = rdma_resolve_route(id, 5000) == 0 ? TERSE_OK : TERSE_ERR_SYSTEM) == TERSE_OK &&
        (st = expect_event(tp->active_ch, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, r, NULL)) == TERSE_OK &&
        (st = make_qp(tp, id, r)) == TERSE_OK) {
        struct rdma_conn_param cp = conn_param(tp, &h);
        st = rdma_connect(id, &cp) == 0 ? TERSE_OK : TERSE_ERR_SYSTEM;
        if (st == TERSE_OK)
            st = expect_event(tp->active_ch, RDMA_CM_EVENT_ESTABLISHED, deadline, r, &rej);
    }
    if (st != TERSE_OK) {
        if (id->qp)
            rdma_destroy_qp(id);
        rdma_destroy_id(id);
        tp->peers[r].id = NULL;
        tp->peers[r].qp = NULL;
        return st;
    }
    tp->peers[r].connected = 1;
    return TERSE_OK;
}

/* One event on the listening channel during set-up. Returns 1 when a peer
 * became connected. */
static int handle_incoming(terse_tp_t *tp, struct rdma_cm_event *ev)
{
    int me = tp->params.rank, n = tp->params.size;
    if (ev->event == RDMA_CM_EVENT_ESTABLISHED) {
        int peer = (int)(intptr_t)ev->id->context;
        tp->peers[peer].connected = 1;
        return 1;
    }
    if (ev->event != RDMA_CM_EVENT_CONNECT_REQUEST) {
        TERSE_INFO(NET, "verbs: ignoring %s during set-up", rdma_event_str(ev->event));
        return 0;
    }
    verbs_hello_t h = {0}, rej = {TERSE_VERBS_MAGIC, me, n, TERSE_OK, 0};
    if (ev->param.conn.private_data && ev->param.conn.private_data_len >= sizeof(h))
        memcpy(&h, ev->param.conn.private_data, sizeof(h));
    rej.status = terse__tp_admit(&tp->params, h.magic == TERSE_VERBS_MAGIC, h.secret_hash, h.rank, h.size);
    if (rej.status == TERSE_OK && tp->peers[h.rank].id)
        rej.status = TERSE_ERR_AUTH; /* that rank is already here */
    if (rej.status == TERSE_OK && make_qp(tp, ev->id, h.rank) != TERSE_OK)
        rej.status = TERSE_ERR_SYSTEM;
    if (rej.status != TERSE_OK) {
        TERSE_WARN(NET, "verbs: rejected a connection claiming rank %d of %d: %s", h.rank, h.size,
                   terse_strerror((terse_status_t)rej.status));
        if (ev->id->qp)
            rdma_destroy_qp(ev->id);
        if (h.magic == TERSE_VERBS_MAGIC && h.rank > me && h.rank < n && tp->peers[h.rank].id == ev->id)
            tp->peers[h.rank].id = NULL, tp->peers[h.rank].qp = NULL;
        rdma_reject(ev->id, &rej, sizeof(rej));
        return 0;
    }
    verbs_hello_t mine = {TERSE_VERBS_MAGIC, me, n, 0, tp->params.secret_hash};
    struct rdma_conn_param cp = conn_param(tp, &mine);
    if (rdma_accept(ev->id, &cp) != 0)
        TERSE_WARN(NET, "verbs: accept of rank %d failed: %s", h.rank, strerror(errno));
    return 0;
}

static terse_status_t verbs_connect(terse_tp_t *tp, const void *const *blobs, double deadline)
{
    int me = tp->params.rank, n = tp->params.size;
    terse_status_t st;
    /* Accept while connecting down: a higher rank may already be knocking. */
    for (int r = 0; r < me; r++) {
        verbs_addr_t a;
        memcpy(&a, blobs[r], sizeof(a));
        if ((st = connect_down(tp, r, &a, deadline)) != TERSE_OK)
            return st;
    }
    int need = n - 1 - me;
    while (need > 0) {
        struct rdma_cm_event *ev;
        if ((st = next_event(tp->listen_ch, deadline, &ev)) != TERSE_OK) {
            TERSE_WARN(NET, "verbs: %d higher rank(s) did not connect: %s", need, terse_strerror(st));
            return st;
        }
        need -= handle_incoming(tp, ev);
        rdma_ack_cm_event(ev);
    }
    TERSE_INFO(NET, "verbs: connected to %d peers (max inline %u)", n - 1, tp->max_inline);
    return TERSE_OK;
}

static terse_status_t verbs_mem_reg(terse_tp_t *tp, void *buf, size_t len, terse_tp_mr_t **out)
{
    terse_tp_mr_t *m = calloc(1, sizeof(*m));
    if (!m)
        return TERSE_ERR_NO_MEMORY;
    m->mr = ibv_reg_mr(tp->pd, buf, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
    if (!m->mr) {
        int e = errno;
        free(m);
        return (e == ENOMEM || e == EPERM || e == EAGAIN) ? memlock_error(len) : TERSE_ERR_SYSTEM;
    }
    tp->pinned += len;
    *out = m;
    return TERSE_OK;
}

static void verbs_mem_dereg(terse_tp_t *tp, terse_tp_mr_t *m)
{
    if (!m)
        return;
    tp->pinned -= m->mr->length;
    ibv_dereg_mr(m->mr);
    free(m);
}

static terse_status_t verbs_mem_rkey(terse_tp_t *tp, terse_tp_mr_t *m, void *rkey)
{
    (void)tp;
    verbs_rkey_t k = {(uint64_t)(uintptr_t)m->mr->addr, m->mr->rkey, 0, m->mr->length};
    memcpy(rkey, &k, sizeof(k));
    return TERSE_OK;
}

static void verbs_close(terse_tp_t *tp, double deadline)
{
    int n = tp->params.size;
    /* Let posted writes (the goodbye among them) complete before leaving. */
    for (;;) {
        int busy = 0;
        for (int r = 0; r < n; r++)
            busy |= tp->peers[r].qp && !tp->peers[r].failed &&
                    (tp->peers[r].posted != tp->peers[r].completed || tp->peers[r].backlog);
        if (!busy || terse__now() > deadline)
            break;
        terse__verbs_progress(tp, 10, NULL, NULL);
    }
    for (int r = 0; r < n; r++) {
        verbs_peer_t *p = &tp->peers[r];
        while (p->backlog) {
            verbs_pending_t *b = p->backlog;
            p->backlog = b->next;
            free(b);
        }
        if (!p->id)
            continue;
        rdma_disconnect(p->id);
        if (p->id->qp)
            rdma_destroy_qp(p->id);
        rdma_destroy_id(p->id);
    }
    tp_free(tp);
}

static void verbs_stats(terse_tp_t *tp, terse_tp_stats_t *st)
{
    st->connections = 0;
    for (int r = 0; r < tp->params.size; r++)
        st->connections += tp->peers[r].connected && !tp->peers[r].failed;
    st->pinned_bytes = tp->pinned;
}

static const char *verbs_device(terse_tp_t *tp) { return ibv_get_device_name(tp->ctx->device); }

const terse_tp_ops_t terse_tp_verbs_ops = {
    .name = "verbs",
    .default_chunk = 1 << 20, /* fewer completions and credits per byte (soft-RoCE runs) */
    .open = verbs_open,
    .address = verbs_address,
    .connect = verbs_connect,
    .stats = verbs_stats,
    .mem_reg = verbs_mem_reg,
    .mem_dereg = verbs_mem_dereg,
    .mem_rkey = verbs_mem_rkey,
    .write_notify = terse__verbs_write_notify,
    .cancel = terse__verbs_cancel,
    .device = verbs_device,
    .progress = terse__verbs_progress,
    .close = verbs_close,
};
