/* verbs.h - private state of the verbs transport (transports/verbs). */
#ifndef TERSE_VERBS_H
#define TERSE_VERBS_H

#include "../transport.h"

#include <infiniband/verbs.h>
#include <netinet/in.h>
#include <rdma/rdma_cma.h>

#define TERSE_VERBS_MAGIC 0x54525642u /* connection private data */
#define TERSE_VERBS_RECV_DEPTH 512     /* receive WRs per incoming QP (notifications) */
#define TERSE_VERBS_SEND_DEPTH 1024
#define TERSE_VERBS_DISCONNECT_GRACE 0.5 /* seconds a disconnect waits for the peer's last writes */

/* Private data of a connection request. */
typedef struct verbs_hello {
    uint32_t magic;
    int32_t rank, size;
    int32_t status; /* unused in a request */
    uint64_t secret_hash;
} verbs_hello_t;

/* Private data of an accept (the acceptor's slots for the connector's
 * writes) and of a reject (status). */
typedef struct verbs_accept {
    uint32_t magic;
    int32_t status;
    uint64_t addr;
    uint32_t rkey, pad;
    uint64_t len;
} verbs_accept_t;

typedef struct verbs_addr {
    struct sockaddr_in sin;
} verbs_addr_t;

struct terse_tp_mr {
    struct ibv_mr *mr;
};

/* A write that cannot be posted yet: the connection is still being made, or
 * the send queue is full. The remote address is filled in at post time. */
typedef struct verbs_pending {
    struct verbs_pending *next;
    struct ibv_send_wr wr;
    struct ibv_sge sge[2];
    uint64_t remote_off;
} verbs_pending_t;

/* What a posted write needs at its completion (sends complete in post order). */
typedef struct verbs_inflight {
    uint64_t cookie;
    int bounce; /* the bounce slot it used, -1 if none */
} verbs_inflight_t;

/* One RC connection, one direction of use (as over TCP): `out` is the one
 * this rank opened and writes over; `in` the one the peer opened, whose
 * writes land in this rank's slots for it. Made on first use. */
enum { VC_NONE, VC_RESOLVING_ADDR, VC_RESOLVING_ROUTE, VC_CONNECTING, VC_UP };
enum { VC_OUT = 0, VC_IN = 1 };
typedef struct verbs_conn {
    struct rdma_cm_id *id;
    struct ibv_qp *qp;
    int state;
} verbs_conn_t;

typedef struct verbs_peer {
    verbs_conn_t conn[2];   /* VC_OUT, VC_IN */
    int failed;
    double disconnected_at; /* RDMA CM said the peer left; reported after a grace period */
    uint64_t raddr, rlen;   /* the peer's slots for this rank (from its accept) */
    uint32_t rkey;
    struct ibv_mr *slots_mr;/* this rank's slots for the peer (registered when it connected) */
    verbs_inflight_t *inflight; /* [TERSE_VERBS_SEND_DEPTH], from the first write */
    uint64_t posted, completed;  /* signalled writes */
    verbs_pending_t *backlog, *backlog_tail; /* not connected yet, or send queue full */
    int flush;              /* `out` came up: the backlog may go */
} verbs_peer_t;

struct terse_tp {
    terse_tp_params_t params;
    struct sockaddr_in addr;  /* our IP on the RDMA device, listen port */
    struct sockaddr_in *addrs;/* every rank's (from connect()) */
    struct rdma_event_channel *listen_ch, *active_ch;
    struct rdma_cm_id *listen_id;
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_comp_channel *comp;
    struct ibv_cq *cq;
    uint32_t max_inline;
    verbs_peer_t *peers;
    uint32_t *qp_keys;        /* QP number -> peer: open addressing, O(1) per completion */
    int *qp_peers;
    size_t qp_cap, qp_n;
    char *bounce_all;
    size_t bounce_len;
    struct ibv_mr *bounce_mr;
    size_t bounce_slot;  /* bytes per bounce slot */
    int bounce_count;    /* slots in the pool, shared by all peers */
    int *bounce_free, nbounce_free; /* free slots (a stack) */
    terse_tp_evq_t pending; /* events found outside progress() */
    uint64_t pinned;        /* bytes registered */
    int nup;                /* connections up (both directions counted) */
};

terse_status_t terse__verbs_write_notify(terse_tp_t *tp, int peer, const terse_tp_iov_t *iov,
                                         int niov, uint64_t remote_off, uint32_t imm, uint64_t cookie);
int terse__verbs_progress(terse_tp_t *tp, int timeout_ms, terse_tp_event_cb cb, void *arg);
void terse__verbs_cancel(terse_tp_t *tp, int peer, terse_tp_drop_fn drop, void *arg);

/* verbs_cm.c: connections on first use. */
/* Start our connection to peer (its first write). */
terse_status_t terse__verbs_cm_start(terse_tp_t *tp, int peer);
/* Drive every connection-manager event (requests, resolution, establishment,
 * rejects, disconnects); peers whose `out` came up get flush = 1. Failures
 * go through fail (with cb/arg). Returns the events reported. */
typedef void (*verbs_fail_fn)(terse_tp_t *tp, int peer, terse_status_t st, const char *why, terse_tp_event_cb cb,
                              void *arg);
int terse__verbs_cm_events(terse_tp_t *tp, verbs_fail_fn fail, terse_tp_event_cb cb, void *arg);
/* The peer a QP belongs to, -1 if none. */
int terse__verbs_qp_peer(const terse_tp_t *tp, uint32_t qpn);
int terse__verbs_post_recvs(struct ibv_qp *qp, int n, int peer);
/* Disconnect and destroy every connection; release the peers' slot registrations. */
void terse__verbs_cm_close(terse_tp_t *tp);
/* Find the RDMA device (TERSE_IB_DEVICE or the first active port) and the
 * IPv4 address RDMA CM should use on it. */
terse_status_t terse__verbs_pick_address(const terse_tp_params_t *params, struct sockaddr_in *out);

#endif
