/*
 * tcp_ep.c - TCP data path: emulated write-with-notify over one non-blocking
 * stream per direction and peer (opened on the first write). The sender
 * writes [frame | payload] with writev straight from the caller's memory; the
 * receiver reads the frame, checks it against its registered regions, and
 * reads the payload straight into place.
 */
#include "tcp.h"
#include "../../lib/log.h"
#include "../../lib/net.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void fail_peer(terse_tp_t *tp, int peer, terse_status_t st, const char *why,
                      terse_tp_event_cb cb, void *arg);

static void emit(terse_tp_t *tp, const terse_tp_event_t *ev, terse_tp_event_cb cb, void *arg)
{
    if (cb)
        cb(arg, ev);
    else
        terse__tp_evq_push(&tp->pending, ev);
}

int terse__tcp_flush(terse_tp_t *tp, int peer, terse_tp_event_cb cb, void *arg)
{
    tcp_peer_t *p = &tp->peers[peer];
    while (p->sq_head) {
        tcp_send_t *s = p->sq_head;
        struct msghdr mh = {.msg_iov = s->iov + s->cur, .msg_iovlen = (size_t)(s->niov - s->cur)};
        ssize_t n = sendmsg(p->out_fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return 0;
            char why[128];
            snprintf(why, sizeof(why), "send to rank %d failed: %s", peer, strerror(errno));
            TERSE_INFO(NET, "%s", why);
            terse__tcp_out_dead(tp, peer); /* reported where its last writes wait, or after a grace period */
            tp->in_grace = 1;
            return -1;
        }
        s->started = 1;
        size_t left = (size_t)n;
        while (s->cur < s->niov && left >= s->iov[s->cur].iov_len)
            left -= s->iov[s->cur++].iov_len;
        if (s->cur < s->niov) {
            s->iov[s->cur].iov_base = (char *)s->iov[s->cur].iov_base + left;
            s->iov[s->cur].iov_len -= left;
            return 0; /* socket buffer full */
        }
        p->sq_head = s->next;
        if (!p->sq_head)
            p->sq_tail = NULL;
        terse_tp_event_t ev = {.type = TERSE_TP_EV_SEND_DONE, .peer = peer, .cookie = s->cookie};
        free(s->owned);
        s->owned = NULL;
        s->next = tp->free_sends;
        tp->free_sends = s;
        emit(tp, &ev, cb, arg);
    }
    return 0;
}

terse_status_t terse__tcp_write_notify(terse_tp_t *tp, int peer, const terse_tp_iov_t *iov,
                                       int niov, uint64_t remote_off, uint32_t imm, uint64_t cookie)
{
    tcp_peer_t *p = &tp->peers[peer];
    if (peer == tp->params.rank || niov > TERSE_TCP_MAX_IOV || niov < 0)
        return TERSE_ERR_INVALID_ARG;
    if (p->failed || p->out_dead)
        return TERSE_ERR_PEER_FAILED;
    if (p->out_fd < 0 && terse__tcp_connect_peer(tp, peer) != TERSE_OK) {
        /* gone; its last writes may still wait for us: reported after a grace period */
        terse__tcp_out_dead(tp, peer);
        tp->in_grace = 1;
        return TERSE_ERR_PEER_FAILED;
    }
    tcp_send_t *s = tp->free_sends;
    if (s)
        tp->free_sends = s->next;
    else if (!(s = malloc(sizeof(*s))))
        return TERSE_ERR_NO_MEMORY;
    size_t len = 0;
    s->niov = 1;
    for (int i = 0; i < niov; i++) {
        if (!iov[i].len)
            continue;
        s->iov[s->niov].iov_base = (void *)iov[i].addr;
        s->iov[s->niov++].iov_len = iov[i].len;
        len += iov[i].len;
    }
    if (len > UINT32_MAX) { /* the receiver checks the offset against its slots */
        s->next = tp->free_sends;
        tp->free_sends = s;
        return TERSE_ERR_INVALID_ARG;
    }
    s->frame = (tcp_frame_t){TERSE_TCP_MAGIC, imm, remote_off, (uint32_t)len, TERSE_TCP_SLOTS_KEY};
    s->iov[0].iov_base = &s->frame;
    s->iov[0].iov_len = sizeof(s->frame);
    s->cur = 0;
    s->started = 0;
    s->owned = NULL;
    s->cookie = cookie;
    s->next = NULL;
    int was_idle = !p->sq_head;
    if (p->sq_tail)
        p->sq_tail->next = s;
    else
        p->sq_head = s;
    p->sq_tail = s;
    /* Try at once: most small writes finish here and save a poll round. */
    if (was_idle)
        terse__tcp_flush(tp, peer, NULL, NULL);
    return TERSE_OK;
}

void terse__tcp_cancel(terse_tp_t *tp, int peer, terse_tp_drop_fn drop, void *arg)
{
    /* The stream must keep every write the peer was promised (other
     * communicators share it, and the peer drops data of failed calls): the
     * bytes still to go are copied aside instead, and the caller's memory is
     * never read again. */
    tcp_peer_t *p = &tp->peers[peer];
    for (tcp_send_t *s = p->sq_head; s; s = s->next) {
        if (s->cookie == UINT64_MAX || s->owned || !drop(arg, s->cookie))
            continue;
        int first = s->cur > 1 ? s->cur : 1; /* the frame header is the send's own */
        size_t len = 0;
        for (int i = first; i < s->niov; i++)
            len += s->iov[i].iov_len;
        char *copy = len ? malloc(len) : NULL;
        if (len && !copy) {
            /* cannot keep the promise: end the stream rather than read freed memory */
            if (p->out_fd >= 0 && !p->failed)
                shutdown(p->out_fd, SHUT_RDWR);
            fail_peer(tp, peer, TERSE_ERR_NO_MEMORY, "out of memory detaching a cancelled write", NULL, NULL);
            return;
        }
        size_t off = 0;
        for (int i = first; i < s->niov; i++) {
            memcpy(copy + off, s->iov[i].iov_base, s->iov[i].iov_len);
            off += s->iov[i].iov_len;
        }
        s->owned = copy;
        if (len) {
            s->iov[first] = (struct iovec){copy, len};
            s->niov = first + 1;
        }
        s->cookie = UINT64_MAX; /* its request is gone: no completion */
    }
}

static void fail_peer(terse_tp_t *tp, int peer, terse_status_t st, const char *why,
                      terse_tp_event_cb cb, void *arg)
{
    tcp_peer_t *p = &tp->peers[peer];
    if (p->failed)
        return;
    p->failed = 1;
    TERSE_INFO(NET, "%s", why);
    terse_tp_event_t ev = {.type = TERSE_TP_EV_PEER_ERROR, .peer = peer, .status = st, .msg = why};
    /* The message must outlive this call when queued: keep a static copy per
     * call site is not possible, so queued errors carry a generic text. */
    if (cb) {
        cb(arg, &ev);
    } else {
        ev.msg = "connection lost";
        terse__tp_evq_push(&tp->pending, &ev);
    }
}

/* Read as much as is available from one peer; returns events emitted. */
static int read_peer(terse_tp_t *tp, int peer, terse_tp_event_cb cb, void *arg)
{
    tcp_peer_t *p = &tp->peers[peer];
    int events = 0;
    char why[160];
    /* Bound the work per call so one busy peer cannot starve the others. */
    for (int budget = 64; budget > 0 && !p->failed; budget--) {
        ssize_t n;
        if (p->rgot < sizeof(p->rframe)) {
            n = recv(p->in_fd, (char *)&p->rframe + p->rgot, sizeof(p->rframe) - p->rgot, MSG_DONTWAIT);
        } else {
            n = recv(p->in_fd, p->rdst, p->rleft, MSG_DONTWAIT);
        }
        if (n == 0) {
            snprintf(why, sizeof(why), "connection to rank %d closed by the peer (process exited?)", peer);
            fail_peer(tp, peer, TERSE_ERR_PEER_FAILED, why, cb, arg);
            return events + 1;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return events;
            snprintf(why, sizeof(why), "receive from rank %d failed: %s", peer, strerror(errno));
            fail_peer(tp, peer, TERSE_ERR_PEER_FAILED, why, cb, arg);
            return events + 1;
        }
        if (p->rgot < sizeof(p->rframe)) {
            p->rgot += (size_t)n;
            if (p->rgot < sizeof(p->rframe))
                continue;
            /* Frame complete: validate before a single payload byte lands. */
            tcp_frame_t *f = &p->rframe;
            if (f->magic != TERSE_TCP_MAGIC || f->key != TERSE_TCP_SLOTS_KEY ||
                (f->len && (f->off > p->rlen || f->len > p->rlen - f->off))) {
                snprintf(why, sizeof(why),
                         "malformed frame from rank %d (magic %08x key %u off %llu len %u)", peer,
                         f->magic, f->key, (unsigned long long)f->off, f->len);
                fail_peer(tp, peer, TERSE_ERR_PROTOCOL, why, cb, arg);
                return events + 1;
            }
            p->rdst = f->len ? p->rbase + f->off : NULL;
            p->rleft = f->len;
            p->rrest = 0;
            if (tp->params.place && f->len > tp->params.place_head) {
                /* read the head first, then ask where the rest goes */
                p->rleft = tp->params.place_head;
                p->rrest = f->len - tp->params.place_head;
            }
        } else {
            p->rdst += n;
            p->rleft -= (size_t)n;
        }
        if (p->rleft == 0 && p->rrest) {
            char *head = p->rdst - tp->params.place_head;
            char *dst = tp->params.place(tp->params.place_arg, peer, head, tp->params.place_head, p->rrest);
            p->rdst = dst ? dst : p->rdst;
            p->rleft = p->rrest;
            p->rrest = 0;
            continue;
        }
        if (p->rleft == 0) {
            terse_tp_event_t ev = {.type = TERSE_TP_EV_NOTIFY, .peer = peer, .imm = p->rframe.imm};
            p->rgot = 0;
            emit(tp, &ev, cb, arg);
            events++;
        }
    }
    return events;
}

/* Our own connection to peer became readable: the peer never writes on it,
 * so this is its end (exit or reset). When the peer's connection to us is
 * open, its last writes may still wait there, ahead of its end: that one
 * reports the failure once drained. Writes to the peer fail from now on. */
static int out_closed(terse_tp_t *tp, int peer, terse_tp_event_cb cb, void *arg)
{
    tcp_peer_t *p = &tp->peers[peer];
    char junk[64], why[128];
    ssize_t n = recv(p->out_fd, junk, sizeof(junk), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    (void)why, (void)cb, (void)arg;
    terse__tcp_out_dead(tp, peer);
    return 0;
}

void terse__tcp_out_dead(terse_tp_t *tp, int peer)
{
    tcp_peer_t *p = &tp->peers[peer];
    if (!p->out_dead) {
        p->out_dead = 1;
        p->out_dead_at = terse__now();
    }
}

/* A peer whose end we saw on our side but who never connected to us (or
 * whose connection still waits in the accept queue, with its last writes):
 * reported once the grace period is over. */
static int grace_over(terse_tp_t *tp, terse_tp_event_cb cb, void *arg)
{
    int events = 0, waiting = 0;
    double now = terse__now();
    for (int r = 0; r < tp->params.size; r++) {
        tcp_peer_t *p = &tp->peers[r];
        if (!p->out_dead || p->failed || p->in_fd >= 0)
            continue;
        if (now - p->out_dead_at < TERSE_TCP_GONE_GRACE) {
            waiting = 1;
            continue;
        }
        char why[128];
        snprintf(why, sizeof(why), "connection to rank %d closed by the peer (process exited?)", r);
        fail_peer(tp, r, TERSE_ERR_PEER_FAILED, why, cb, arg);
        events++;
    }
    tp->in_grace = waiting;
    return events;
}

static int grow_pfds(terse_tp_t *tp, size_t need)
{
    if (need <= tp->npfds_cap)
        return 0;
    size_t cap = need + 16;
    struct pollfd *f = realloc(tp->pfds, cap * sizeof(*f));
    if (f)
        tp->pfds = f;
    int *q = realloc(tp->pfd_peer, cap * sizeof(*q));
    if (q)
        tp->pfd_peer = q;
    if (!f || !q)
        return -1;
    tp->npfds_cap = cap;
    return 0;
}

int terse__tcp_progress(terse_tp_t *tp, int timeout_ms, terse_tp_event_cb cb, void *arg)
{
    int events = 0;
    /* Deliver what finished outside progress first. */
    events += terse__tp_evq_deliver(&tp->pending, cb, arg);

    if (grow_pfds(tp, 2 + (size_t)tp->npending + 2 * (size_t)tp->nconnected) != 0)
        return TERSE_ERR_NO_MEMORY;
    int nfds = 0;
    tp->pfds[nfds] = (struct pollfd){.fd = tp->lfd, .events = POLLIN};
    tp->pfd_peer[nfds++] = -1;
    if (tp->params.wake_fd >= 0) { /* another thread wants the caller's lock: only wakes the poll */
        tp->pfds[nfds] = (struct pollfd){.fd = tp->params.wake_fd, .events = POLLIN};
        tp->pfd_peer[nfds++] = INT_MIN;
    }
    for (int k = 0; k < tp->npending; k++) {
        tp->pfds[nfds] = (struct pollfd){.fd = tp->pending_in[k].fd, .events = POLLIN};
        tp->pfd_peer[nfds++] = -2 - k;
    }
    for (int r = 0; r < tp->params.size && nfds < (int)tp->npfds_cap; r++) {
        tcp_peer_t *p = &tp->peers[r];
        if (p->failed)
            continue;
        if (p->in_fd >= 0) {
            tp->pfds[nfds] = (struct pollfd){.fd = p->in_fd, .events = POLLIN};
            tp->pfd_peer[nfds++] = r;
        }
        if (p->out_fd >= 0 && !p->out_dead) {
            tp->pfds[nfds] = (struct pollfd){.fd = p->out_fd, .events = POLLIN | (p->sq_head ? POLLOUT : 0)};
            tp->pfd_peer[nfds++] = r;
        }
    }
    /* Block only when nothing was delivered: the caller has work otherwise;
     * a pending hello is checked for its deadline at least every 100 ms. */
    events += tp->in_grace ? grace_over(tp, cb, arg) : 0;
    int wait = events ? 0 : (tp->npending || tp->in_grace) && (timeout_ms < 0 || timeout_ms > 100) ? 100 : timeout_ms;
    int rc = poll(tp->pfds, (nfds_t)nfds, wait);
    if (rc < 0)
        return events;
    int hellos = 0;
    for (int i = 0; i < nfds; i++) {
        short re = tp->pfds[i].revents;
        int r = tp->pfd_peer[i];
        if (r == -1) {
            if (re)
                terse__tcp_accept_ready(tp);
            continue;
        }
        if (r == INT_MIN)
            continue;
        if (r <= -2) {
            hellos = 1;
            continue;
        }
        if (!re || tp->peers[r].failed)
            continue;
        if (tp->pfds[i].fd == tp->peers[r].out_fd) {
            if (re & POLLOUT)
                terse__tcp_flush(tp, r, cb, arg);
            if ((re & (POLLIN | POLLHUP | POLLERR)) && !tp->peers[r].failed)
                events += out_closed(tp, r, cb, arg);
        } else if (re & (POLLIN | POLLHUP | POLLERR)) {
            events += read_peer(tp, r, cb, arg);
        }
    }
    /* hellos last: pending_in[] is compacted as they complete */
    for (int k = hellos ? tp->npending - 1 : -1; k >= 0; k--)
        terse__tcp_hello_ready(tp, k);
    /* Writes flushed inside the loop emitted through cb directly; anything
     * queued meanwhile goes out now. */
    return events + terse__tp_evq_deliver(&tp->pending, cb, arg);
}
