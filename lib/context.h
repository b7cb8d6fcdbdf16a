/*
 * context.h - what one process owns once, whatever the number of
 * communicators over it (internal): identity in the world, the transport
 * endpoint and its connections, the registered receive slots and the
 * credit channel to each peer, registered user memory, the host table, the
 * queue of active requests, and the peers known to be gone.
 *
 * Communicators (comm.h) are views onto a context: a rank map, sequence
 * numbers, a sticky error. Every communicator derived from one world
 * (split, dup, create_group, shrink) shares its context and its connections;
 * the context lives until the last of them is destroyed.
 */
#ifndef TERSE_CONTEXT_H
#define TERSE_CONTEXT_H

#include "terse_config.h"
#include "terse.h"
#include "wire.h"
#include "../transports/transport.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct terse_chan {
    uint64_t sent, credited;     /* slots written to the peer / freed by it */
    uint64_t arrived, consumed;  /* slots landed here / processed */
    uint32_t credits_owed;       /* freed slots not yet reported */
    int owed_listed;             /* in ctx->owed[] */
    int ready_listed;            /* in ctx->ready[] */
    double last_arrival;         /* when the last chunk landed */
    int bye;                     /* peer is shutting down cleanly */
    int lost;                    /* connection gone */
    int fenced;                  /* excluded by a shrink: nothing from it is read */
    int talked;                  /* this rank wrote to it: it gets a goodbye */
    uint32_t abort_seq;          /* from the peer's last ABORT_SEQ */
    uint64_t abort_comm;         /* from the peer's last ABORT_COMM_HI/LO */
    struct terse_stash *stash_head, *stash_tail; /* chunks moved out of their slot */
} terse_chan_t;

/* A chunk taken out of its slot because it could not be consumed yet while
 * chunks of another communicator waited behind it (see executor.c). */
typedef struct terse_stash {
    struct terse_stash *next;
    terse_wire_hdr_t hdr;
    char data[];
} terse_stash_t;

/* An abort for a communicator not created here yet (executor.c). */
#define TERSE_EARLY_ABORTS 32
typedef struct terse_early_abort {
    uint64_t comm;
    int from;
    uint32_t seq, val;
} terse_early_abort_t;

typedef struct terse_comm terse_comm_t;
typedef struct terse_request terse_request_t;

typedef struct terse_ctx {
    int rank, size; /* in the world */
    int refs;       /* communicators alive over this context */
    terse_config_t cfg;
    uint64_t secret_hash;
    const terse_tp_ops_t *tp_ops;
    terse_tp_t *tp;

    size_t chunk;        /* payload bytes per slot */
    int nslots;          /* slots per peer */
    size_t slot_stride;  /* header + payload */
    char **slots;        /* [size]: nslots receive slots for each peer, NULL until it connects */
    size_t slots_len;    /* bytes of one peer's slots */
    char *hdr_region;    /* send headers: size * nslots, pages of their own (fork) */
    size_t hdr_len;      /* its bytes */
    terse_tp_mr_t *hdr_mr;
    terse_chan_t *chans;
    uint64_t *host;      /* host identity of every world rank */
    int *owed, nowed;    /* channels with credits to return */
    int *ready, nready;  /* channels with chunks to consume (in slots or stashed) */
    size_t stash_bytes, stash_limit;

    struct terse_memreg *regs; /* user and cached registrations */
    int reg_auto;              /* cached (automatic) entries */
    uint64_t reg_clock;
    uint64_t reg_created, reg_hits, reg_misses;

    terse_request_t *req_head, *req_tail; /* every communicator's, in start order */
    terse_comm_t *comms;                  /* alive over this context */
    uint64_t gone[64];                    /* ids of the last communicators destroyed */
    unsigned ngone;
    terse_early_abort_t early[TERSE_EARLY_ABORTS];
    unsigned nearly;
    uint64_t issue_round;                 /* executor pass counter (send ordering) */
    double last_activity;
    int in_progress;                      /* inside terse__exec_progress (callbacks submit) */
    uint32_t serials;                     /* request serials (UINT32_MAX never names one) */

    /* progress.c: the lock the caller's threads and the progress thread share */
    pthread_mutex_t lock;
    pthread_cond_t work_cv, handoff_cv;
    pthread_t thread;
    int lock_ready, thread_on, stop, sleepers, wake_fd;
    uint64_t finished;   /* requests ended, steps decided: the thread wakes sleepers on a change */
    /* Callers waiting for such an event sleep on sleep_cv without the
     * context lock (the thread holds it between passes) and take it back
     * through terse__ctx_lock's hand-off. */
    pthread_mutex_t sleep_lock;
    pthread_cond_t sleep_cv;
    unsigned wake_gen;
    atomic_int waiters; /* callers queued for the lock */
} terse_ctx_t;

/* Open the world context: identity from the parameters and the launcher's
 * environment, the transport, the out-of-band allgather of every rank's
 * address, receive key and host, then the connections. */
terse_status_t terse__ctx_create(const terse_comm_params_t *params, terse_ctx_t **ctx);

/* Drop one reference; the last one says goodbye to the peers and frees all. */
void terse__ctx_release(terse_ctx_t *ctx);

/* The host identity of this process: a hash of override when given
 * (TERSE_HOST_ID, terse_comm_params_t.host_id), else of the boot id and host name. */
uint64_t terse__host_id(const char *override);

#endif
