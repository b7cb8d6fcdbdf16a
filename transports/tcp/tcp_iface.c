/*
 * tcp_iface.c - TCP transport: open, connections on first use with the job
 * secret, memory "registration" (a key table used to validate incoming
 * writes), close.
 */
#include "tcp.h"
#include "../../lib/log.h"
#include "../../lib/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void tp_free(terse_tp_t *tp)
{
    free(tp->peers), free(tp->pfds), free(tp->pfd_peer), free(tp->addrs), free(tp->pending_in), free(tp);
}

static terse_status_t tcp_open(const terse_tp_params_t *params, terse_tp_t **tp_out)
{
    terse_tp_t *tp = calloc(1, sizeof(*tp));
    if (!tp)
        return TERSE_ERR_NO_MEMORY;
    tp->params = *params;
    tp->lfd = -1;
    tp->peers = calloc((size_t)params->size, sizeof(*tp->peers));
    tp->addrs = calloc((size_t)params->size, sizeof(*tp->addrs));
    if (!tp->peers || !tp->addrs) {
        tp_free(tp);
        return TERSE_ERR_NO_MEMORY;
    }
    for (int i = 0; i < params->size; i++)
        tp->peers[i].out_fd = tp->peers[i].in_fd = -1;
    memset(&tp->addr, 0, sizeof(tp->addr));
    tp->addr.sin_family = AF_INET;
    if (params->bind_addr && *params->bind_addr &&
        inet_pton(AF_INET, params->bind_addr, &tp->addr.sin_addr) != 1) {
        TERSE_WARN(NET, "TERSE_BIND_ADDR '%s' is not an IPv4 address", params->bind_addr);
        tp_free(tp);
        return TERSE_ERR_INVALID_ARG;
    }
    terse_status_t st = terse__net_listen(&tp->addr, &tp->lfd);
    if (st != TERSE_OK) {
        TERSE_WARN(NET, "cannot listen on %s (any port): %s", params->bind_addr ? params->bind_addr : "",
                   strerror(errno));
        tp_free(tp);
        return st;
    }
    terse__net_set_nonblocking(tp->lfd, 1);
    *tp_out = tp;
    return TERSE_OK;
}

static terse_status_t tcp_address(terse_tp_t *tp, void *blob, size_t *len)
{
    tcp_addr_t a = {.sin = tp->addr};
    memcpy(blob, &a, sizeof(a));
    *len = sizeof(a);
    return TERSE_OK;
}

static void tune_socket(terse_tp_t *tp, int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (tp->params.sockbuf) {
        int sz = (int)tp->params.sockbuf;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
    }
    terse__net_set_nonblocking(fd, 1);
}

/* One WARN for the first stray, then a count at most once a minute: a port
 * scanner must not flood the log. */
static void stray(terse_tp_t *tp, const char *why, int rank, int size)
{
    tp->strays++;
    double now = terse__now();
    if (tp->strays == 1 || now - tp->stray_logged > 60) {
        TERSE_WARN(NET, "rejected a connection claiming rank %d of %d: %s (%llu rejected so far)", rank, size, why,
                   (unsigned long long)tp->strays);
        tp->stray_logged = now;
    }
}

terse_status_t terse__tcp_connect_peer(terse_tp_t *tp, int peer)
{
    tcp_peer_t *p = &tp->peers[peer];
    double timeout = tp->params.timeout_sec > 0 && tp->params.timeout_sec < 10 ? tp->params.timeout_sec : 10;
    int fd;
    /* its listener is up since before the rendezvous: refused means gone */
    int err = terse__net_connect_once(&tp->addrs[peer], terse__now() + timeout, &fd);
    if (err) {
        TERSE_INFO(NET, "cannot connect to rank %d: %s", peer, strerror(err));
        return TERSE_ERR_PEER_FAILED;
    }
    terse_status_t st;
    tcp_hello_t h = {TERSE_TCP_HELLO, TERSE_TCP_VERSION, tp->params.secret_hash, tp->params.rank, tp->params.size};
    /* a fresh socket's buffer takes the 24 bytes at once */
    st = terse__net_send_all(fd, &h, sizeof(h), terse__now() + timeout);
    if (st != TERSE_OK) {
        close(fd);
        return TERSE_ERR_PEER_FAILED;
    }
    tune_socket(tp, fd);
    p->out_fd = fd;
    tp->nconnected++;
    return TERSE_OK;
}

void terse__tcp_accept_ready(terse_tp_t *tp)
{
    for (;;) {
        int fd = accept(tp->lfd, NULL, NULL);
        if (fd < 0)
            return;
        if (tp->npending == tp->pending_cap) {
            int cap = tp->pending_cap ? 2 * tp->pending_cap : 8;
            tcp_pending_t *q = realloc(tp->pending_in, (size_t)cap * sizeof(*q));
            if (!q) {
                close(fd);
                return;
            }
            tp->pending_in = q;
            tp->pending_cap = cap;
        }
        terse__net_set_nonblocking(fd, 1);
        /* a stray that sends nothing must not hold a slot for long */
        tp->pending_in[tp->npending++] = (tcp_pending_t){fd, 0, {0}, terse__now() + 5.0};
    }
}

static void pending_drop(terse_tp_t *tp, int k, int close_fd)
{
    if (close_fd)
        close(tp->pending_in[k].fd);
    tp->pending_in[k] = tp->pending_in[--tp->npending];
}

void terse__tcp_hello_ready(terse_tp_t *tp, int k)
{
    tcp_pending_t *q = &tp->pending_in[k];
    ssize_t n = recv(q->fd, (char *)&q->hello + q->got, sizeof(q->hello) - q->got, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        stray(tp, "it closed before its hello", -1, -1);
        pending_drop(tp, k, 1);
        return;
    }
    if (n < 0) {
        if (terse__now() > q->deadline) {
            stray(tp, "no hello within 5 s", -1, -1);
            pending_drop(tp, k, 1);
        }
        return;
    }
    q->got += (size_t)n;
    if (q->got < sizeof(q->hello))
        return;
    tcp_hello_t *h = &q->hello;
    /* the peer opens one connection to us; any rank may (no order) */
    terse_status_t st = TERSE_OK;
    if (h->magic != TERSE_TCP_HELLO || h->version != TERSE_TCP_VERSION)
        st = TERSE_ERR_PROTOCOL;
    else if (h->secret_hash != tp->params.secret_hash || h->size != tp->params.size || h->rank < 0 ||
             h->rank >= h->size || h->rank == tp->params.rank || tp->peers[h->rank].in_fd >= 0)
        st = TERSE_ERR_AUTH;
    if (st != TERSE_OK) {
        stray(tp, st == TERSE_ERR_AUTH ? "wrong job secret or duplicate/foreign rank" : "not a terse peer",
              (int)h->rank, (int)h->size);
        pending_drop(tp, k, 1);
        return;
    }
    tcp_peer_t *p = &tp->peers[h->rank];
    if (!p->rbase && !(p->rbase = tp->params.slots(tp->params.place_arg, h->rank, &p->rlen))) {
        stray(tp, "no memory for its receive slots", (int)h->rank, (int)h->size);
        pending_drop(tp, k, 1);
        return;
    }
    tune_socket(tp, q->fd);
    p->in_fd = q->fd;
    tp->nconnected++;
    pending_drop(tp, k, 0);
}

/* Only the addresses: connections are opened on first use (lazily, by the
 * writer), so a ring or a tree opens what it uses, not n - 1 of each. */
static terse_status_t tcp_connect(terse_tp_t *tp, const void *const *blobs, double deadline)
{
    (void)deadline;
    for (int r = 0; r < tp->params.size; r++) {
        tcp_addr_t a;
        memcpy(&a, blobs[r], sizeof(a));
        tp->addrs[r] = a.sin;
    }
    TERSE_INFO(NET, "tcp: %d peers known; connections open on first use", tp->params.size - 1);
    return TERSE_OK;
}

static terse_status_t tcp_mem_reg(terse_tp_t *tp, void *buf, size_t len, terse_tp_mr_t **mr_out)
{
    uint32_t key = 0;
    while (key < tp->nmrs && tp->mrs[key])
        key++;
    if (key == tp->nmrs) {
        uint32_t n = tp->nmrs ? 2 * tp->nmrs : 8;
        terse_tp_mr_t **m = realloc(tp->mrs, n * sizeof(*m));
        if (!m)
            return TERSE_ERR_NO_MEMORY;
        memset(m + tp->nmrs, 0, (n - tp->nmrs) * sizeof(*m));
        tp->mrs = m;
        tp->nmrs = n;
    }
    terse_tp_mr_t *mr = malloc(sizeof(*mr));
    if (!mr)
        return TERSE_ERR_NO_MEMORY;
    *mr = (terse_tp_mr_t){key, buf, len};
    tp->mrs[key] = mr;
    *mr_out = mr;
    return TERSE_OK;
}

static void tcp_mem_dereg(terse_tp_t *tp, terse_tp_mr_t *mr)
{
    if (!mr)
        return;
    tp->mrs[mr->key] = NULL;
    free(mr);
}

static void tcp_close(terse_tp_t *tp, double deadline)
{
    int n = tp->params.size;
    /* Finish queued writes, then end our direction: the peer never writes on
     * our connection, so closing it leaves nothing unread (no reset) and the
     * kernel still delivers what is in flight. */
    for (int r = 0; r < n; r++) {
        tcp_peer_t *p = &tp->peers[r];
        while (p->out_fd >= 0 && !p->failed && p->sq_head && terse__now() < deadline) {
            if (terse__tcp_flush(tp, r, NULL, NULL) < 0)
                break;
            if (p->sq_head) {
                struct pollfd pf = {.fd = p->out_fd, .events = POLLOUT};
                poll(&pf, 1, 10);
            }
        }
        if (p->out_fd >= 0) {
            shutdown(p->out_fd, SHUT_WR);
            close(p->out_fd);
        }
        if (p->in_fd >= 0)
            close(p->in_fd);
        while (p->sq_head) {
            tcp_send_t *s = p->sq_head;
            p->sq_head = s->next;
            free(s->owned);
            free(s);
        }
    }
    while (tp->free_sends) {
        tcp_send_t *s = tp->free_sends;
        tp->free_sends = s->next;
        free(s);
    }
    for (int k = 0; k < tp->npending; k++)
        close(tp->pending_in[k].fd);
    if (tp->lfd >= 0)
        close(tp->lfd);
    for (uint32_t k = 0; k < tp->nmrs; k++)
        free(tp->mrs[k]);
    free(tp->mrs);
    terse__tp_evq_free(&tp->pending);
    tp_free(tp);
}

static void tcp_stats(terse_tp_t *tp, terse_tp_stats_t *st)
{
    st->connections = tp->nconnected;
    st->pinned_bytes = 0; /* "registration" pins nothing */
}

static const char *tcp_device(terse_tp_t *tp)
{
    (void)tp;
    return NULL;
}

const terse_tp_ops_t terse_tp_tcp_ops = {
    .name = "tcp",
    .default_chunk = 256 << 10, /* loopback: docs/performance.md */
    .open = tcp_open,
    .address = tcp_address,
    .connect = tcp_connect,
    .stats = tcp_stats,
    .mem_reg = tcp_mem_reg,
    .mem_dereg = tcp_mem_dereg,
    .write_notify = terse__tcp_write_notify,
    .cancel = terse__tcp_cancel,
    .device = tcp_device,
    .progress = terse__tcp_progress,
    .close = tcp_close,
};
