/* verbs.h - private state of the verbs transport (transports/verbs). */
#ifndef TERSE_VERBS_H
#define TERSE_VERBS_H

#include "../transport.h"

#include <infiniband/verbs.h>
#include <netinet/in.h>
#include <rdma/rdma_cma.h>

#define TERSE_VERBS_MAGIC 0x54525642u /* connection private data */
#define TERSE_VERBS_RECV_DEPTH 512     /* receive WRs per QP (notifications) */
#define TERSE_VERBS_SEND_DEPTH 1024
#define TERSE_VERBS_DISCONNECT_GRACE 0.5 /* seconds a disconnect waits for the peer's last writes */

/* Private data of a connection request, and of a reject. */
typedef struct verbs_hello {
    uint32_t magic;
    int32_t rank, size;
    int32_t status; /* reject reason */
    uint64_t secret_hash;
} verbs_hello_t;

typedef struct verbs_addr {
    struct sockaddr_in sin;
} verbs_addr_t;

struct terse_tp_mr {
    struct ibv_mr *mr;
};

typedef struct verbs_rkey {
    uint64_t addr;
    uint32_t rkey;
    uint32_t pad;
    uint64_t len;
} verbs_rkey_t;

/* A write the send queue could not take yet. */
typedef struct verbs_pending {
    struct verbs_pending *next;
    struct ibv_send_wr wr;
    struct ibv_sge sge[2];
} verbs_pending_t;

/* What a posted write needs at its completion (sends complete in post order). */
typedef struct verbs_inflight {
    uint64_t cookie;
    int bounce; /* the bounce slot it used, -1 if none */
} verbs_inflight_t;

typedef struct verbs_peer {
    struct rdma_cm_id *id;
    struct ibv_qp *qp;
    int connected, failed;
    double disconnected_at; /* RDMA CM said the peer left; reported after a grace period */
    verbs_inflight_t inflight[TERSE_VERBS_SEND_DEPTH];
    uint64_t posted, completed;  /* signalled writes */
    verbs_pending_t *backlog, *backlog_tail; /* waiting for send-queue room */
    uint64_t backlog_cookie_min;
} verbs_peer_t;

struct terse_tp {
    terse_tp_params_t params;
    struct sockaddr_in addr;  /* our IP on the RDMA device, listen port */
    struct rdma_event_channel *listen_ch, *active_ch;
    struct rdma_cm_id *listen_id;
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_comp_channel *comp;
    struct ibv_cq *cq;
    uint32_t max_inline;
    verbs_peer_t *peers;
    char *bounce_all;
    size_t bounce_len;
    struct ibv_mr *bounce_mr;
    size_t bounce_slot;  /* bytes per bounce slot */
    int bounce_count;    /* slots in the pool, shared by all peers */
    int *bounce_free, nbounce_free; /* free slots (a stack) */
    terse_tp_evq_t pending; /* events found outside progress() */
    uint64_t pinned;        /* bytes registered */
};

terse_status_t terse__verbs_write_notify(terse_tp_t *tp, int peer, const terse_tp_iov_t *iov,
                                         int niov, const void *rkey, uint64_t remote_off,
                                         uint32_t imm, uint64_t cookie);
int terse__verbs_progress(terse_tp_t *tp, int timeout_ms, terse_tp_event_cb cb, void *arg);
void terse__verbs_cancel(terse_tp_t *tp, int peer, terse_tp_drop_fn drop, void *arg);
int terse__verbs_post_recvs(verbs_peer_t *p, int n, int peer);
/* Find the RDMA device (TERSE_IB_DEVICE or the first active port) and the
 * IPv4 address RDMA CM should use on it. */
terse_status_t terse__verbs_pick_address(const terse_tp_params_t *params, struct sockaddr_in *out);

#endif
