/* tcp.h - private state of the TCP transport (transports/tcp). */
#ifndef TERSE_TCP_H
#define TERSE_TCP_H

#include "../transport.h"

#include <netinet/in.h>
#include <sys/uio.h>

#define TERSE_TCP_MAGIC 0x54435046u /* frame magic */
#define TERSE_TCP_HELLO 0x54435048u /* connection handshake magic */
#define TERSE_TCP_VERSION 2
#define TERSE_TCP_SLOTS_KEY 0x534c4f54u /* "SLOT": the one region a frame may target */
#define TERSE_TCP_MAX_IOV 4
#define TERSE_TCP_GONE_GRACE 0.5 /* seconds a peer's last writes may still be accepted after its end */

/* Emulated RDMA write: this header, then len payload bytes destined for the
 * receiver's slots for this sender at offset `off` (key: TERSE_TCP_SLOTS_KEY). */
typedef struct tcp_frame {
    uint32_t magic;
    uint32_t imm;
    uint64_t off;
    uint32_t len;
    uint32_t key;
} tcp_frame_t;

typedef struct tcp_hello {
    uint32_t magic, version;
    uint64_t secret_hash;
    int32_t rank, size;
} tcp_hello_t;

typedef struct tcp_ack {
    uint32_t magic;
    int32_t status;
} tcp_ack_t;

typedef struct tcp_send {
    struct tcp_send *next;
    tcp_frame_t frame;
    struct iovec iov[1 + TERSE_TCP_MAX_IOV];
    int niov, cur;
    int started; /* some bytes are on the wire */
    char *owned; /* detached by cancel: the payload's private copy */
    uint64_t cookie;
} tcp_send_t;

/* Connections are made on first use and carry one direction each: a rank
 * writes to a peer over the connection it opened (out_fd) and reads what
 * the peer writes over the one the peer opened (in_fd). Two ranks that both
 * start talking at once then never race to agree on one socket. */
typedef struct tcp_peer {
    int out_fd; /* ours to the peer; -1 until the first write */
    int in_fd;  /* the peer's to us; -1 until it connects */
    int failed; /* failure already reported */
    int out_dead; /* our connection ended (the peer left); its own may still hold data */
    double out_dead_at;
    tcp_send_t *sq_head, *sq_tail;
    char *rbase;  /* this peer's receive slots here (from params.slots, at its connect) */
    size_t rlen;
    /* receive state machine: frame header, then payload straight into the slots */
    tcp_frame_t rframe;
    size_t rgot;
    char *rdst;
    size_t rleft;
    size_t rrest; /* payload bytes after the placement head, not yet placed */
} tcp_peer_t;

struct terse_tp_mr {
    uint32_t key;
    char *base;
    size_t len;
};

typedef struct tcp_addr {
    struct sockaddr_in sin;
} tcp_addr_t;

/* An accepted connection whose hello has not fully arrived. */
typedef struct tcp_pending {
    int fd;
    size_t got;
    tcp_hello_t hello;
    double deadline;
} tcp_pending_t;

struct terse_tp {
    terse_tp_params_t params;
    int lfd;
    struct sockaddr_in addr;
    struct sockaddr_in *addrs; /* every rank's listener (from connect()) */
    tcp_peer_t *peers;
    struct pollfd *pfds;  /* listener, pending hellos, 2 per peer */
    int *pfd_peer;        /* peer of pfds[i], or -1 listener, -2 - k pending hello k */
    size_t npfds_cap;
    tcp_pending_t *pending_in;
    int npending, pending_cap;
    int nconnected;       /* connections open, both directions */
    int in_grace;         /* a peer's end awaits its grace period */
    uint64_t strays;      /* connections rejected (logged at a bounded rate) */
    double stray_logged;
    terse_tp_mr_t **mrs; /* by key: what this rank registered (nothing a peer writes to) */
    uint32_t nmrs;
    tcp_send_t *free_sends;
    terse_tp_evq_t pending; /* events found outside progress() */
};

int terse__tcp_progress(terse_tp_t *tp, int timeout_ms, terse_tp_event_cb cb, void *arg);
/* Open our connection to peer (first write to it): connect, send the hello. */
terse_status_t terse__tcp_connect_peer(terse_tp_t *tp, int peer);
/* Accept what waits on the listener; read and check pending hellos. */
void terse__tcp_accept_ready(terse_tp_t *tp);
void terse__tcp_hello_ready(terse_tp_t *tp, int k);
terse_status_t terse__tcp_write_notify(terse_tp_t *tp, int peer, const terse_tp_iov_t *iov,
                                       int niov, uint64_t remote_off, uint32_t imm, uint64_t cookie);
/* Push queued writes of one peer; returns -1 on a broken connection. */
int terse__tcp_flush(terse_tp_t *tp, int peer, terse_tp_event_cb cb, void *arg);
void terse__tcp_cancel(terse_tp_t *tp, int peer, terse_tp_drop_fn drop, void *arg);
/* Our connection to peer ended: writes fail from now on; the peer is
 * reported gone by its own connection's end, or after the grace period. */
void terse__tcp_out_dead(terse_tp_t *tp, int peer);

#endif
