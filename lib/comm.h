/* comm.h - a communicator: a view of some ranks of a context (internal). */
#ifndef TERSE_COMM_H
#define TERSE_COMM_H

#include "context.h"

#include <stdint.h>

struct terse_comm {
    terse_ctx_t *ctx;
    terse_comm_t *next_in_ctx;
    uint64_t id;         /* the same on every member, unique in the context */
    int rank, size;      /* in this communicator */
    int *world;          /* [size]: communicator rank -> world rank */
    int *rank_of;        /* [ctx->size]: world rank -> communicator rank, -1 if not a member */
    terse_config_t cfg;  /* the context's, with this communicator's overrides */
    size_t chunk;        /* = ctx->chunk */
    const terse_tp_ops_t *tp_ops; /* = ctx->tp_ops */

    terse_comm_stats_t stats; /* registration counters live in the context */
    uint32_t next_seq;
    uint64_t children;   /* split/dup calls made on it: part of a child's id */
    struct terse_group_count *groups; /* create_group calls per member set */
    uint64_t shrinks;
    int internal;        /* used by terse itself (shrink's agreement): old data is dropped */
    int building_plan;   /* a terse_*_init is building: the request is a plan */
    terse_request_t *plans; /* persistent requests made on it (freed with it) */
    int pending;         /* requests of this communicator in flight */
    double last_progress;/* an op of one of them completed (timeout) */
    uint64_t *peer_block;/* [size]: issue round in which an earlier request blocked sends to it */

    /* Sticky error: calls with seq >= error_seq fail (and every later call);
     * earlier calls still in flight finish normally when they can. */
    terse_status_t error;
    uint32_t error_seq;
    int error_culprit;   /* world rank blamed, -1 if none */
    int suspect;         /* world rank this rank itself saw fail or time out, -1 if none */
    char error_detail[320];
};

/* The communicator of ctx with this id, or NULL. */
static inline terse_comm_t *terse__ctx_find_comm(const terse_ctx_t *ctx, uint64_t id)
{
    for (terse_comm_t *c = ctx->comms; c; c = c->next_in_ctx)
        if (c->id == id)
            return c;
    return NULL;
}

/* 1 when a communicator with this id was destroyed here recently: late
 * chunks for it are dropped. */
static inline int terse__ctx_comm_was(const terse_ctx_t *ctx, uint64_t id)
{
    unsigned n = ctx->ngone < 64 ? ctx->ngone : 64;
    for (unsigned i = 0; i < n; i++)
        if (ctx->gone[i] == id)
            return 1;
    return 0;
}

/* A communicator over ctx with the given members (world ranks, in rank
 * order) and id; this process must be a member. Takes a context reference. */
terse_status_t terse__comm_new(terse_ctx_t *ctx, uint64_t id, const int *world, int size,
                               const terse_config_t *cfg, terse_comm_t **out);

/* Release a communicator (no goodbye: the connections belong to the context). */
void terse__comm_free(terse_comm_t *comm);

/* Child id: the same on every member that makes the same call in order. */
uint64_t terse__comm_child_id(uint64_t parent, uint64_t what, uint64_t a, uint64_t b);

#endif
