/*
 * verbs_iface.c - verbs transport set-up: device, protection domain, one CQ
 * with a completion channel (so an idle rank sleeps), the shared bounce pool,
 * the RDMA CM listener (connections themselves are made on first use, in
 * verbs_cm.c), memory registration, orderly close.
 */
#include "verbs.h"
#include "../../lib/log.h"
#include "../../lib/net.h"
#include "../../lib/topology.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
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
    free(tp->addrs);
    free(tp->bounce_free);
    terse__tp_evq_free(&tp->pending);
    free(tp);
}

static void fork_init_once(void)
{
    /* Ask only where the kernel does not copy pinned pages at fork itself:
     * fork support marks registered pages MADV_DONTFORK, so a child would
     * lose any heap page that shares one with a registration. */
    if (ibv_is_fork_initialized() == IBV_FORK_UNNEEDED) {
        TERSE_INFO(NET, "verbs: fork support unneeded (the kernel copies pinned pages at fork)");
        return;
    }
    int rc = ibv_fork_init();
    if (rc != 0)
        TERSE_WARN(NET, "verbs: ibv_fork_init failed (%s): memory registered before terse (by another "
                   "library) makes fork unsafe; set RDMAV_FORK_SAFE=1 before the process starts",
                   strerror(rc));
    else
        TERSE_INFO(NET, "verbs: fork support enabled (registered pages are not inherited by a child)");
}

/* A process that forks after registering memory (a PyTorch DataLoader
 * starting its workers) must not lose it: copy-on-write would move the
 * parent's pages away from the memory the device writes into. On kernels
 * before 5.13 rdma-core's fork support (MADV_DONTFORK on every
 * registration) has to be on before the first one; later kernels copy
 * pinned pages into the child at fork and need nothing. Every region terse
 * registers is whole pages of its own, so a child never misses a page it
 * uses. */
static void fork_safety(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fork_init_once);
}

static terse_status_t verbs_open(const terse_tp_params_t *params, terse_tp_t **out)
{
    fork_safety();
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
    tp->addrs = calloc((size_t)params->size, sizeof(*tp->addrs));
    tp->listen_ch = rdma_create_event_channel();
    tp->active_ch = rdma_create_event_channel();
    if (!tp->peers || !tp->addrs || !tp->listen_ch || !tp->active_ch ||
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
    /* one CQ for every QP: sized for the device's limit, since connections
     * are made on demand (a completion's QP is looked up in O(1)) */
    int cqe = params->size * (TERSE_VERBS_SEND_DEPTH + TERSE_VERBS_RECV_DEPTH);
    if (cqe > da.max_cqe || cqe <= 0)
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

/* Only the addresses: connections are made on first use (verbs_cm.c). */
static terse_status_t verbs_connect(terse_tp_t *tp, const void *const *blobs, double deadline)
{
    (void)deadline;
    for (int r = 0; r < tp->params.size; r++) {
        verbs_addr_t a;
        memcpy(&a, blobs[r], sizeof(a));
        tp->addrs[r] = a.sin;
    }
    TERSE_INFO(NET, "verbs: %d peers known; connections are made on first use", tp->params.size - 1);
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

static void verbs_close(terse_tp_t *tp, double deadline)
{
    int n = tp->params.size;
    /* Let queued and posted writes (the goodbye among them) complete before
     * leaving - also those still waiting for their connection. */
    for (;;) {
        int busy = 0;
        for (int r = 0; r < n; r++) {
            verbs_peer_t *p = &tp->peers[r];
            busy |= !p->failed && (p->posted != p->completed || p->backlog);
        }
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
    }
    terse__verbs_cm_close(tp);
    tp_free(tp);
}

static void verbs_stats(terse_tp_t *tp, terse_tp_stats_t *st)
{
    st->connections = tp->nup;
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
    .write_notify = terse__verbs_write_notify,
    .cancel = terse__verbs_cancel,
    .device = verbs_device,
    .progress = terse__verbs_progress,
    .close = verbs_close,
};
