/*
 * tcp_iface.c - TCP transport: open, connection set-up with the job secret,
 * memory "registration" (a key table used to validate incoming writes), close.
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

static terse_status_t tcp_open(const terse_tp_params_t *params, terse_tp_t **tp_out)
{
    terse_tp_t *tp = calloc(1, sizeof(*tp));
    if (!tp)
        return TERSE_ERR_NO_MEMORY;
    tp->params = *params;
    tp->lfd = -1;
    tp->peers = calloc((size_t)params->size, sizeof(*tp->peers));
    tp->pfds = calloc((size_t)params->size, sizeof(*tp->pfds));
    tp->pfd_peer = calloc((size_t)params->size, sizeof(int));
    if (!tp->peers || !tp->pfds || !tp->pfd_peer)
        goto nomem;
    for (int i = 0; i < params->size; i++)
        tp->peers[i].fd = -1;
    memset(&tp->addr, 0, sizeof(tp->addr));
    tp->addr.sin_family = AF_INET;
    if (params->bind_addr && *params->bind_addr &&
        inet_pton(AF_INET, params->bind_addr, &tp->addr.sin_addr) != 1) {
        TERSE_WARN(NET, "TERSE_BIND_ADDR '%s' is not an IPv4 address", params->bind_addr);
        free(tp->peers), free(tp->pfds), free(tp->pfd_peer), free(tp);
        return TERSE_ERR_INVALID_ARG;
    }
    terse_status_t st = terse__net_listen(&tp->addr, &tp->lfd);
    if (st != TERSE_OK) {
        TERSE_WARN(NET, "cannot listen on %s (any port): %s", params->bind_addr ? params->bind_addr : "",
                   strerror(errno));
        free(tp->peers), free(tp->pfds), free(tp->pfd_peer), free(tp);
        return st;
    }
    *tp_out = tp;
    return TERSE_OK;
nomem:
    free(tp->peers), free(tp->pfds), free(tp->pfd_peer), free(tp);
    return TERSE_ERR_NO_MEMORY;
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

/* Accept one connection and check its hello; 1 = accepted peer, 0 = rejected. */
static int accept_one(terse_tp_t *tp, int fd, double deadline, terse_status_t *st)
{
    tcp_hello_t h;
    tcp_ack_t ack = {TERSE_TCP_HELLO, TERSE_OK};
    /* A stray connection that sends nothing must not stall set-up for long. */
    double hd = terse__now() + 5.0 < deadline ? terse__now() + 5.0 : deadline;
    *st = terse__net_recv_all(fd, &h, sizeof(h), hd);
    if (*st != TERSE_OK) {
        TERSE_WARN(NET, "rejected a connection that sent no valid hello (%s)", terse_strerror(*st));
        return 0;
    }
    ack.status = terse__tp_admit(&tp->params, h.magic == TERSE_TCP_HELLO && h.version == TERSE_TCP_VERSION,
                                 h.secret_hash, h.rank, h.size);
    if (ack.status == TERSE_OK && tp->peers[h.rank].fd >= 0)
        ack.status = TERSE_ERR_AUTH; /* that rank is already here */
    terse__net_send_all(fd, &ack, sizeof(ack), hd);
    if (ack.status != TERSE_OK) {
        TERSE_WARN(NET, "rejected a connection claiming rank %d of %d: %s", (int)h.rank, (int)h.size,
                   ack.status == TERSE_ERR_AUTH ? "wrong job secret or duplicate/foreign rank"
                                                : "not a terse peer");
        return 0;
    }
    tp->peers[h.rank].fd = fd;
    return 1;
}

static terse_status_t tcp_connect(terse_tp_t *tp, const void *const *blobs, double deadline)
{
    int me = tp->params.rank, n = tp->params.size;
    terse_status_t st;
    /* Lower ranks accept from higher ones: connect down, then accept up. */
    for (int r = 0; r < me; r++) {
        tcp_addr_t a;
        memcpy(&a, blobs[r], sizeof(a));
        int fd;
        st = terse__net_connect(&a.sin, deadline, &fd);
        if (st != TERSE_OK) {
            TERSE_WARN(NET, "cannot connect to rank %d: %s", r, terse_strerror(st));
            return st;
        }
        tcp_hello_t h = {TERSE_TCP_HELLO, TERSE_TCP_VERSION, tp->params.secret_hash, me, n};
        tcp_ack_t ack;
        st = terse__net_send_all(fd, &h, sizeof(h), deadline);
        if (st == TERSE_OK)
            st = terse__net_recv_all(fd, &ack, sizeof(ack), deadline);
        if (st == TERSE_OK && (ack.magic != TERSE_TCP_HELLO || ack.status != TERSE_OK))
            st = ack.magic == TERSE_TCP_HELLO ? (terse_status_t)ack.status : TERSE_ERR_PROTOCOL;
        if (st != TERSE_OK) {
            TERSE_WARN(NET, "rank %d refused our connection: %s", r, terse_strerror(st));
            close(fd);
            return st;
        }
        tp->peers[r].fd = fd;
    }
    for (int need = n - 1 - me; need > 0;) {
        int fd;
        st = terse__net_accept(tp->lfd, deadline, &fd);
        if (st != TERSE_OK) {
            TERSE_WARN(NET, "waiting for %d higher rank(s) to connect: %s", need, terse_strerror(st));
            return st;
        }
        if (accept_one(tp, fd, deadline, &st))
            need--;
        else
            close(fd);
    }
    /* Everyone is connected: later connection attempts are strays. */
    close(tp->lfd);
    tp->lfd = -1;
    for (int r = 0; r < n; r++)
        if (r != me)
            tune_socket(tp, tp->peers[r].fd);
    TERSE_INFO(NET, "tcp: connected to %d peers", n - 1);
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

static terse_status_t tcp_mem_rkey(terse_tp_t *tp, terse_tp_mr_t *mr, void *rkey)
{
    (void)tp;
    tcp_rkey_t k = {mr->key, 0, mr->len};
    memcpy(rkey, &k, sizeof(k));
    return TERSE_OK;
}

static void tcp_close(terse_tp_t *tp, double deadline)
{
    int n = tp->params.size;
    /* Finish queued writes, then half-close and drain until the peer half-closes
     * too: closing with unread bytes would send a RST that can destroy data the
     * peer has not read yet. */
    for (int r = 0; r < n; r++) {
        tcp_peer_t *p = &tp->peers[r];
        while (p->fd >= 0 && !p->failed && p->sq_head && terse__now() < deadline) {
            if (terse__tcp_flush(tp, r, NULL, NULL) < 0)
                break;
            if (p->sq_head) {
                struct pollfd pf = {.fd = p->fd, .events = POLLOUT};
                poll(&pf, 1, 10);
            }
        }
        if (p->fd >= 0)
            shutdown(p->fd, SHUT_WR);
    }
    char junk[4096];
    for (int r = 0; r < n; r++) {
        tcp_peer_t *p = &tp->peers[r];
        while (p->fd >= 0 && !p->failed) {
            ssize_t k = recv(p->fd, junk, sizeof(junk), MSG_DONTWAIT);
            if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
                break;
            if (k < 0) {
                double left = deadline - terse__now();
                if (left <= 0)
                    break;
                struct pollfd pf = {.fd = p->fd, .events = POLLIN};
                poll(&pf, 1, left > 1 ? 1000 : (int)(left * 1000) + 1);
            }
        }
        if (p->fd >= 0)
            close(p->fd);
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
    if (tp->lfd >= 0)
        close(tp->lfd);
    for (uint32_t k = 0; k < tp->nmrs; k++)
        free(tp->mrs[k]);
    free(tp->mrs);
    terse__tp_evq_free(&tp->pending);
    free(tp->peers);
    free(tp->pfds);
    free(tp->pfd_peer);
    free(tp);
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
    .mem_reg = tcp_mem_reg,
    .mem_dereg = tcp_mem_dereg,
    .mem_rkey = tcp_mem_rkey,
    .write_notify = terse__tcp_write_notify,
    .cancel = terse__tcp_cancel,
    .device = tcp_device,
    .progress = terse__tcp_progress,
    .close = tcp_close,
};
