/*
 * schedule.h - collectives as schedules. An algorithm (lib/coll/) turns a
 * call into a list of chunk-sized operations with dependencies, over the
 * ranks of its communicator; one executor (executor.c) runs every schedule
 * of every communicator over the context's channels, so each algorithm is a
 * short, transport-free builder and non-blocking calls come for free.
 * This file builds and frees schedules; it never runs them.
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
    TERSE_ACT_VARLEN,  /* RECV: one whole message of a size the sender chose (at most
                        * `bytes`), over as many chunks as it takes; the buffer comes
                        * from the request's varlen_alloc once the size is known */
    TERSE_ACT_CALL,    /* LOCAL: call(req, req->call_arg, bytes) - encode a chunk, add a
                        * decoded code, re-encode at the owner - when its dependencies
                        * are done; a failure fails the request */
    TERSE_ACT_GATE     /* LOCAL: done once opened (terse__exec_open_gate) - an event
                        * outside the schedule: the caller's contribution is ready, a
                        * decision was taken */
} terse_action_t;

typedef enum {
    TERSE_COLL_ALLREDUCE = 1,
    TERSE_COLL_REDUCE_SCATTER,
    TERSE_COLL_ALLGATHER,
    TERSE_COLL_ALLGATHERV,
    TERSE_COLL_BROADCAST,
    TERSE_COLL_BARRIER,
    TERSE_COLL_COMPRESSED, /* a step of a compressed collective (byte exchange) */
    TERSE_COLL_AGREE,      /* a round of shrink's agreement on the survivors */
    TERSE_COLL_ALLTOALL,
    TERSE_COLL_ALLTOALLV,
    TERSE_COLL_REDUCE,
    TERSE_COLL_PARTIAL,    /* a round of a partial collective (agreement or data) */
    TERSE_COLL_ADACONS     /* an AdaCons step (allreduce, allgather, allreduce) */
} terse_coll_t;

typedef struct terse_request terse_request_t;
typedef terse_status_t (*terse_sched_call_fn)(terse_request_t *req, void *arg, size_t idx);

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
    terse_sched_call_fn call; /* LOCAL CALL */
} terse_sched_op_t;

/* Where a VARLEN receive from `peer` of `total` bytes goes (NULL: out of memory). */
typedef void *(*terse_varlen_alloc_fn)(void *arg, int peer, uint64_t total);

struct terse_request {
    terse_comm_t *comm;
    terse_request_t *next;
    uint32_t seq;    /* on the communicator */
    uint32_t serial; /* in the context: names the request in transport cookies */
    uint64_t sig;
    terse_coll_t coll;
    terse_dtype_t dtype;
    terse_op_t op;
    int root;
    uint64_t count;

    terse_sched_op_t *ops;
    int nops, cap;
    int remaining;
    /* Per-peer op lists (indices into ops), built by terse__sched_finish. */
    int *send_idx, *send_off, *send_cur;
    int *recv_idx, *recv_off, *recv_cur;
    int *recv_chunk; /* chunks consumed per peer (a VARLEN op takes several) */
    int has_varlen;
    terse_varlen_alloc_fn varlen_alloc;
    void *varlen_arg;
    int *local_idx, nlocal, local_cur;
    int *peers, npeers; /* communicator ranks this request talks to */
    void *call_arg;     /* for the CALL ops and on_done */
    uint64_t tag;       /* the builder's own (a partial step's number) */
    terse_request_t **owner; /* a handle's in-flight slot: cleared when the caller reaps this
                                request (wait, a test that sees it done, free), so the handle
                                stays busy until then whoever drove it to its end */
    /* Run when the request ends, before it is marked done, with its status;
     * returns the final one (a collective's last local step: decode, commit
     * or roll back its state). */
    terse_status_t (*on_done)(terse_request_t *req, void *arg, terse_status_t st);

    /* Run as each receive op completes (idx: the op), lock held: the
     * arrivals of a partial collective are seen in arrival order. It may
     * open gates and submit requests (terse__exec_submit_locked). */
    void (*on_recv)(terse_request_t *req, int peer, int idx);
    /* A timer: on_wake(req) runs once the clock passes wake_at (> 0). */
    double wake_at;
    void (*on_wake)(terse_request_t *req);
    int patient;          /* waits for callers' events, not peers: no timeout */

    int cancelled;        /* failed: its queued writes are dropped */

    void *scratch;
    int done;
    terse_status_t status;
    int freed_by_user; /* the user released the handle: free on completion */

    int built;         /* per-peer lists made (once, also for a plan) */
    int persistent;    /* a plan (terse_*_init): started many times, freed by the user */
    int active;         /* a plan: started and not yet reaped by wait or test (MPI's "active") */
    terse_request_t *plan_next; /* the communicator's plans */
    void *pre_dst;     /* copied from pre_src at every start (an in-place input, */
    const void *pre_src; /* the out-of-place input of a reduction into recvbuf) */
    size_t pre_bytes;
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

/* A LOCAL CALL op (see TERSE_ACT_CALL); returns its index or -1. */
int terse__sched_call(terse_request_t *req, terse_sched_call_fn fn, size_t idx, int dep0, int dep1);

/* Ops from `first` on that wait for nothing wait for `gate` instead: a
 * builder's schedule appended behind a step of another. */
void terse__sched_gate(terse_request_t *req, int first, int gate);

/* Copy src to dst before the schedule runs - now, and again at every start
 * of a plan (so a plan reads the buffers' contents of that start). */
void terse__sched_prologue(terse_request_t *req, void *dst, const void *src, size_t bytes);

/* Make a completed plan runnable again: every op undone, every cursor back
 * at the start, a new sequence number. */
void terse__sched_rearm(terse_request_t *req);

/* Finish building: the per-peer op lists and the peer list. Returns
 * TERSE_ERR_NO_MEMORY (the request is then still the caller's to free). */
terse_status_t terse__sched_finish(terse_request_t *req);
void terse__sched_free(terse_request_t *req);

/* seq a comes at or after seq b (29-bit wrap-around on the wire is handled by callers). */
static inline int terse__seq_ge(uint32_t a, uint32_t b) { return (int32_t)(a - b) >= 0; }
#endif
