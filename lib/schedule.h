/*
 * sched.h - collectives as schedules. An algorithm (lib/coll/) turns a call
 * into a list of chunk-sized operations with dependencies; one executor
 * (sched.c) runs every schedule over the channels, so each algorithm is a
 * short, transport-free builder and non-blocking calls come for free.
 *
 * Ordering rules that make this deadlock-free and mismatch-detectable:
 *  - sends to a peer go out in schedule order, and requests in start order;
 *  - chunks from a peer are consumed in arrival order, matched by sequence
 *    number to a request and by position to that request's next receive.
 */
#ifndef TERSE_SCHEDULE_H
#define TERSE_SCHEDULE_H

#include "comm.h"

typedef enum { TERSE_OPK_SEND, TERSE_OPK_RECV, TERSE_OPK_LOCAL } terse_opkind_t;

typedef enum {
    TERSE_ACT_NONE,    /* SEND */
    TERSE_ACT_COPY,    /* RECV: dst = incoming */
    TERSE_ACT_REDUCE,  /* RECV: dst = dst op incoming (src_first: incoming op dst) */
    TERSE_ACT_REDUCE3, /* RECV: dst = src op incoming (src is a local input) */
    TERSE_ACT_SCALE,   /* LOCAL: dst /= nranks (AVG) */
    TERSE_ACT_MEMCPY,  /* LOCAL: dst = src */
    TERSE_ACT_VARLEN   /* RECV: one whole message of a size the sender chose (at most
                        * `bytes`), over as many chunks as it takes; the buffer comes
                        * from the request's varlen_alloc once the size is known */
} terse_action_t;

typedef enum {
    TERSE_COLL_ALLREDUCE = 1,
    TERSE_COLL_REDUCE_SCATTER,
    TERSE_COLL_ALLGATHER,
    TERSE_COLL_ALLGATHERV,
    TERSE_COLL_BROADCAST,
    TERSE_COLL_BARRIER,
    TERSE_COLL_COMPRESSED /* a step of a compressed collective (byte exchange) */
} terse_coll_t;

typedef struct terse_sched_op {
    uint8_t kind, action;
    uint8_t src_first; /* reduction operand order, see terse__reduce */
    uint8_t finalize;  /* after the reduction, apply AVG scaling */
    uint8_t posted, done;
    int peer;
    void *dst;
    const void *src;
    size_t bytes;
    uint64_t total;  /* SEND: bytes of the whole message this chunk belongs to (VARLEN);
                      * RECV VARLEN: learned from the first chunk */
    uint64_t got;    /* RECV VARLEN: bytes received so far */
    int32_t dep[2]; /* ops that must be done first (-1: none) */
} terse_sched_op_t;

/* Where a VARLEN receive from `peer` of `total` bytes goes (NULL: out of memory). */
typedef void *(*terse_varlen_alloc_fn)(void *arg, int peer, uint64_t total);

struct terse_request {
    terse_comm_t *comm;
    terse_request_t *next;
    uint32_t seq;
    uint64_t sig;
    terse_coll_t coll;
    terse_dtype_t dtype;
    terse_op_t op;
    int root;
    uint64_t count;

    terse_sched_op_t *ops;
    int nops, cap;
    int remaining;
    /* Per-peer op lists (indices into ops), built by terse__sched_commit. */
    int *send_idx, *send_off, *send_cur;
    int *recv_idx, *recv_off, *recv_cur;
    int *recv_chunk; /* chunks consumed per peer (a VARLEN op takes several) */
    int has_varlen;
    terse_varlen_alloc_fn varlen_alloc;
    void *varlen_arg;
    int *local_idx, nlocal, local_cur;

    void *scratch;
    int done;
    terse_status_t status;
    int freed_by_user; /* the user released the handle: free on completion */
};

/* Start a request; `sig_extra` folds in arguments that must agree (allgatherv counts). */
terse_status_t terse__sched_new(terse_comm_t *comm, terse_coll_t coll, terse_dtype_t dtype,
                                terse_op_t op, int root, uint64_t count, uint64_t sig_extra,
                                terse_request_t **req);
/* Add one op; returns its index (>= 0) or -1 when out of memory. */
int terse__sched_add(terse_request_t *req, terse_opkind_t kind, terse_action_t action, int peer,
                     void *dst, const void *src, size_t bytes, int dep0, int dep1);
/* A variable-length message to `peer`: chunked SENDs that carry its total
 * size, so the receiver needs no size exchange (at least one, possibly empty,
 * chunk). Returns the last op's index or -1 when out of memory. */
int terse__sched_send_msg(terse_request_t *req, int peer, const void *src, size_t bytes);

/* Finish building, queue the request and make first progress. On failure the
 * request is released. */
terse_status_t terse__sched_commit(terse_request_t *req);
void terse__sched_free(terse_request_t *req);

/* One round of progress on every active request; blocks up to timeout_ms in
 * the transport when nothing can move. */
void terse__comm_progress(terse_comm_t *comm, int timeout_ms);

/* Receive-side placement (terse_tp_place_fn): a chunk that completes a COPY
 * receive goes straight to the user's buffer instead of a slot. */
#define TERSE_PLACED_MAGIC 0x504c4344u
void *terse__comm_place(void *arg, int peer, void *head, size_t head_len, size_t rest_len);

/* Transport event handler (NOTIFY, SEND_DONE, PEER_ERROR). */
void terse__comm_on_event(void *arg, const terse_tp_event_t *ev);

/* Complete every pending request with seq >= from with the sticky error. */
void terse__sched_fail_from(terse_comm_t *comm, uint32_t from);
#endif
