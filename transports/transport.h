/*
 * transport.h - the internal contract every transport implements.
 *
 * The model is RDMA's: memory is registered, a peer learns a remote key for
 * it, and the only data operation is write-with-notify - gather local
 * segments into a contiguous range of the peer's registered memory, then
 * raise a completion on the peer carrying a 32-bit immediate. Collectives,
 * flow control and mismatch checks live above this line (lib/executor.c);
 * a transport never looks inside a payload.
 *
 * All calls are non-blocking except open/connect (bounded by a deadline) and
 * progress (bounded by its timeout). Errors are converted to terse_status_t
 * here, once; peer failures are reported as events, not return codes, so the
 * layer above can name the peer.
 */
#ifndef TERSE_TRANSPORT_H
#define TERSE_TRANSPORT_H

#include "terse.h"

#include <stddef.h>
#include <stdint.h>

#define TERSE_TP_ADDR_MAX 64 /* bytes of a transport address blob */

typedef struct terse_tp terse_tp_t;
typedef struct terse_tp_mr terse_tp_mr_t;

/*
 * Optional receive-side placement, for transports that copy payloads out of a
 * byte stream (TCP): once the first head_len bytes of a write with more than
 * that have landed in the registered region, the transport asks where the
 * rest should go. NULL keeps the region; any other pointer receives the
 * remaining rest_len bytes instead (the head stays in the region). RDMA
 * transports ignore it: there the sender places data.
 */
typedef void *(*terse_tp_place_fn)(void *arg, int peer, void *head, size_t head_len, size_t rest_len);

/*
 * Receive slots for one peer, asked for once, when that peer first connects
 * to this rank: the layer above hands out *len bytes (it sets *len) that the
 * transport registers for the peer's writes and makes known to it (verbs: in
 * the connection's private data). Memory then grows with the peers that
 * talk to this rank, not with the job. NULL: out of memory (the connection
 * is refused).
 */
typedef void *(*terse_tp_slots_fn)(void *arg, int peer, size_t *len);

typedef struct terse_tp_params {
    int rank, size;
    terse_tp_place_fn place;
    void *place_arg;
    size_t place_head;
    terse_tp_slots_fn slots; /* with place_arg */
    int wake_fd;             /* >= 0: progress's blocking wait also ends when it is readable (not read) */
    uint64_t secret_hash;  /* every connection must present it */
    const char *bind_addr; /* IPv4 to listen on ("" = any) */
    size_t sockbuf;        /* TCP socket buffers */
    double timeout_sec;
    size_t max_msg;        /* largest unregistered payload of one write */
    int max_outstanding;   /* data writes in flight per peer (credits) */
    int bounce_slots;      /* verbs: slots of the shared bounce pool (0: 2 max_outstanding + 4) */
    const char *ib_device; /* verbs: "name[:port]" or "" */
    const char *ib_addr;   /* verbs: IPv4 of the RDMA device or "" */
    int ib_gid_index;      /* verbs: -1 or the GID whose IPv4 to use */
    int ib_timeout;        /* verbs: QP ack timeout exponent */
    int ib_retry;          /* verbs: retry count */
} terse_tp_params_t;

/* One local segment of a write. mr may be NULL for transports that do not
 * need registration of the source (TCP). */
typedef struct terse_tp_iov {
    const void *addr;
    size_t len;
    terse_tp_mr_t *mr;
} terse_tp_iov_t;

typedef enum {
    TERSE_TP_EV_NOTIFY,    /* a peer's write landed; imm carries its immediate */
    TERSE_TP_EV_SEND_DONE, /* our write with this cookie finished; source reusable */
    TERSE_TP_EV_PEER_ERROR /* the connection to peer failed: status, msg */
} terse_tp_event_type_t;

typedef struct terse_tp_event {
    terse_tp_event_type_t type;
    int peer;
    uint32_t imm;
    uint64_t cookie;
    terse_status_t status;
    const char *msg;
} terse_tp_event_t;

typedef void (*terse_tp_event_cb)(void *arg, const terse_tp_event_t *ev);

/* cancel(): 1 when the queued write with this cookie must be dropped. */
typedef int (*terse_tp_drop_fn)(void *arg, uint64_t cookie);

typedef struct terse_tp_stats {
    int connections;         /* open now (a TCP pair that talks both ways counts 2) */
    uint64_t pinned_bytes;   /* memory registered with the device (0 on TCP) */
} terse_tp_stats_t;

typedef struct terse_tp_ops {
    const char *name;
    size_t default_chunk; /* TERSE_CHUNK_SIZE when unset: what measured best */
    /* Create the local endpoint (listener, device, PD, CQ). */
    terse_status_t (*open)(const terse_tp_params_t *params, terse_tp_t **tp);
    /* Blob that a peer passes to connect() to reach us. */
    terse_status_t (*address)(terse_tp_t *tp, void *blob, size_t *len);
    /* Learn every rank's address (blobs[r] from address() of rank r) and
     * connect, to every peer at once (verbs) or to each on the first write
     * to it (tcp: a ring or a tree then opens what it uses). */
    terse_status_t (*connect)(terse_tp_t *tp, const void *const *blobs, double deadline);
    /* What the endpoint holds now (statistics). */
    void (*stats)(terse_tp_t *tp, terse_tp_stats_t *stats);
    terse_status_t (*mem_reg)(terse_tp_t *tp, void *buf, size_t len, terse_tp_mr_t **mr);
    void (*mem_dereg)(terse_tp_t *tp, terse_tp_mr_t *mr);
    /* Gather iov into the peer's receive slots for this rank (see
     * terse_tp_slots_fn) at remote_off, then notify with imm.
     * A write of zero bytes only notifies. Completion comes as SEND_DONE with
     * cookie. Writes to one peer land and notify in the order posted; a
     * write to a peer not connected yet opens the connection and waits for
     * it in the transport's queue.
     * TERSE_IN_PROGRESS: no resource now (verbs: the bounce pool is empty);
     * nothing was queued - retry after progress() returned completions. */
    terse_status_t (*write_notify)(terse_tp_t *tp, int peer, const terse_tp_iov_t *iov, int niov,
                                   uint64_t remote_off, uint32_t imm, uint64_t cookie);
    /* Stop reading the caller's memory for queued writes to peer for which
     * drop(arg, cookie) says 1 (notifications with cookie UINT64_MAX are not
     * asked about). The writes are still delivered, in order - the peer
     * counts on every slot it was promised, and other communicators share
     * the connection - but from a private copy (TCP) or from memory the
     * layer above keeps registered (verbs: bounce slots, or registered user
     * memory, which must stay registered until the call that used it has
     * returned). No SEND_DONE follows for them. */
    void (*cancel)(terse_tp_t *tp, int peer, terse_tp_drop_fn drop, void *arg);
    /* Name of the device in use, for NUMA placement (NULL: none, as on TCP). */
    const char *(*device)(terse_tp_t *tp);
    /* Deliver events through cb. Blocks up to timeout_ms (0: poll) when there
     * is nothing to do. Returns the number of events delivered, or <0 status. */
    int (*progress)(terse_tp_t *tp, int timeout_ms, terse_tp_event_cb cb, void *arg);
    /* Flush queued writes (bounded by deadline), tell peers we are leaving,
     * release everything. */
    void (*close)(terse_tp_t *tp, double deadline);
} terse_tp_ops_t;

/* The admission rule both transports apply to an incoming connection: the
 * hello must be well-formed, carry this job's secret, and come from another
 * rank of a job of the same size (any rank may connect first, on first use).
 * Whether that rank is already connected is the caller's to check. */
terse_status_t terse__tp_admit(const terse_tp_params_t *params, int wellformed, uint64_t secret_hash,
                               int rank, int size);

/* Events found outside progress() (a write that completed at once), held
 * until the next progress() call delivers them. Shared by the transports. */
typedef struct terse_tp_evq {
    terse_tp_event_t *ev;
    size_t n, cap;
} terse_tp_evq_t;
void terse__tp_evq_push(terse_tp_evq_t *q, const terse_tp_event_t *ev);
int terse__tp_evq_deliver(terse_tp_evq_t *q, terse_tp_event_cb cb, void *arg);
void terse__tp_evq_free(terse_tp_evq_t *q);

extern const terse_tp_ops_t terse_tp_tcp_ops;
#ifdef TERSE_HAVE_VERBS
extern const terse_tp_ops_t terse_tp_verbs_ops;
#endif

/* Look up a transport by name ("tcp", "verbs"); "auto" picks verbs when a
 * usable device exists (probing with params), else tcp, and logs the choice. */
const terse_tp_ops_t *terse__tp_select(const char *name, const terse_tp_params_t *params,
                                       terse_status_t *status);

#endif
