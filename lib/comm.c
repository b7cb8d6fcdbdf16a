/*
 * comm.c - communicators over a context: the world communicator, split,
 * dup, create_group and split by node, their ids, accessors and release.
 * A child never opens anything: it is a rank map and an id over the
 * parent's context.
 */
#include "comm.h"
#include "coll/coll.h"
#include "executor.h"
#include "log.h"
#include "progress.h"
#include "net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ID_WORLD 0x776f726c64ull /* "world" */
#define ID_SPLIT 0x73706c6974ull
#define ID_DUP 0x647570ull
#define ID_GROUP 0x67726f7570ull
#define ID_NODE 0x6e6f6465ull

/* create_group calls made on a communicator, per member list: members of the
 * same list call in the same order, so the count agrees among them. */
typedef struct terse_group_count {
    struct terse_group_count *next;
    uint64_t hash, count;
} terse_group_count_t;

uint64_t terse__comm_child_id(uint64_t parent, uint64_t what, uint64_t a, uint64_t b)
{
    uint64_t v[4] = {parent, what, a, b};
    uint64_t id = terse__hash64(v, sizeof(v), 0x636f6d6dull) & TERSE_COMM_ID_MASK;
    return id ? id : 1;
}

terse_status_t terse__comm_new(terse_ctx_t *ctx, uint64_t id, const int *world, int size,
                               const terse_config_t *cfg, terse_comm_t **out)
{
    *out = NULL;
    terse_comm_t *c = calloc(1, sizeof(*c));
    if (!c)
        return TERSE_ERR_NO_MEMORY;
    c->world = malloc(sizeof(int) * (size_t)size);
    c->rank_of = malloc(sizeof(int) * (size_t)ctx->size);
    c->peer_block = calloc((size_t)size, sizeof(uint64_t));
    if (!c->world || !c->rank_of || !c->peer_block) {
        free(c->world), free(c->rank_of), free(c->peer_block), free(c);
        return TERSE_ERR_NO_MEMORY;
    }
    for (int w = 0; w < ctx->size; w++)
        c->rank_of[w] = -1;
    c->rank = -1;
    for (int i = 0; i < size; i++) {
        c->world[i] = world[i];
        c->rank_of[world[i]] = i;
        if (world[i] == ctx->rank)
            c->rank = i;
    }
    c->ctx = ctx;
    c->id = id & TERSE_COMM_ID_MASK;
    c->size = size;
    c->cfg = *cfg;
    c->chunk = ctx->chunk;
    c->tp_ops = ctx->tp_ops;
    c->error_culprit = c->suspect = -1;
    terse__ctx_lock(ctx);
    c->next_in_ctx = ctx->comms;
    ctx->comms = c;
    ctx->refs++;
    *out = c;
    terse__exec_replay_aborts(c);
    terse__ctx_unlock(ctx);
    return TERSE_OK;
}

void terse__comm_free(terse_comm_t *comm)
{
    terse_ctx_t *ctx = comm->ctx;
    terse__ctx_lock(ctx);
    /* its plans go with it: the inactive ones now, the running ones with
     * the cancelled requests */
    for (terse_request_t *r = comm->plans, *next; r; r = next) {
        next = r->plan_next;
        if (r->done)
            terse__sched_free(r);
    }
    comm->plans = NULL;
    terse__exec_cancel_comm(comm);
    for (terse_comm_t **pp = &ctx->comms; *pp; pp = &(*pp)->next_in_ctx)
        if (*pp == comm) {
            *pp = comm->next_in_ctx;
            break;
        }
    ctx->gone[ctx->ngone++ % 64] = comm->id;
    while (comm->groups) {
        terse_group_count_t *g = comm->groups;
        comm->groups = g->next;
        free(g);
    }
    free(comm->world);
    free(comm->rank_of);
    free(comm->peer_block);
    free(comm);
    terse__ctx_unlock(ctx);
    terse__ctx_release(ctx);
}

void terse_comm_params_init(terse_comm_params_t *params)
{
    if (!params)
        return;
    memset(params, 0, sizeof(*params));
    params->struct_size = sizeof(*params);
}

terse_status_t terse_comm_create(const terse_comm_params_t *params, terse_comm_t **out)
{
    if (!out)
        return TERSE_ERR_INVALID_ARG;
    *out = NULL;
    terse_ctx_t *ctx;
    terse_status_t st = terse__ctx_create(params, &ctx);
    if (st != TERSE_OK)
        return st;
    int *world = malloc(sizeof(int) * (size_t)ctx->size);
    if (!world) {
        ctx->refs = 1;
        terse__ctx_release(ctx);
        return TERSE_ERR_NO_MEMORY;
    }
    for (int r = 0; r < ctx->size; r++)
        world[r] = r;
    st = terse__comm_new(ctx, terse__comm_child_id(0, ID_WORLD, ctx->secret_hash, (uint64_t)ctx->size),
                         world, ctx->size, &ctx->cfg, out);
    free(world);
    if (st == TERSE_OK && (st = terse__progress_start(ctx)) != TERSE_OK) {
        terse__comm_free(*out);
        *out = NULL;
        return st;
    }
    if (st != TERSE_OK) {
        ctx->refs = 1;
        terse__ctx_release(ctx);
    }
    return st;
}

terse_status_t terse_comm_create_from_env(terse_comm_t **comm) { return terse_comm_create(NULL, comm); }

terse_status_t terse_comm_destroy(terse_comm_t *comm)
{
    if (!comm)
        return TERSE_ERR_INVALID_ARG;
    TERSE_INFO(COLL, "rank %d of %d: %llu calls, %llu bytes sent; chunks received in place %llu, through "
                     "a slot %llu", comm->rank, comm->size, (unsigned long long)comm->stats.calls,
               (unsigned long long)comm->stats.bytes_sent, (unsigned long long)comm->stats.chunks_placed,
               (unsigned long long)comm->stats.chunks_slotted);
    terse__comm_free(comm);
    return TERSE_OK;
}

/* ---- split and friends ------------------------------------------------ */

typedef struct split_entry {
    int64_t color, key;
} split_entry_t;

static int cmp_member(const void *a, const void *b, void *all_)
{
    const split_entry_t *all = all_;
    int x = *(const int *)a, y = *(const int *)b;
    if (all[x].key != all[y].key)
        return all[x].key < all[y].key ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Every rank of comm tells its (color, key); the ranks of this rank's color
 * form the child, ordered by key then rank. `what` tells split, dup and node
 * split apart, on the wire (a mismatch is reported) and in the child's id. */
static terse_status_t split_by(terse_comm_t *comm, uint64_t what, int color, int key, terse_comm_t **newcomm)
{
    if (!comm || !newcomm)
        return TERSE_ERR_INVALID_ARG;
    *newcomm = NULL;
    if (comm->error != TERSE_OK)
        return comm->error;
    int n = comm->size;
    split_entry_t *all = malloc(sizeof(split_entry_t) * (size_t)n);
    size_t *off = calloc((size_t)n, sizeof(size_t)), *len = calloc((size_t)n, sizeof(size_t));
    int *members = malloc(sizeof(int) * (size_t)n);
    terse_status_t st = all && off && len && members ? TERSE_OK : TERSE_ERR_NO_MEMORY;
    uint64_t call = comm->children++;
    if (st == TERSE_OK) {
        for (int r = 0; r < n; r++)
            off[r] = (size_t)r * sizeof(split_entry_t), len[r] = sizeof(split_entry_t);
        all[comm->rank] = (split_entry_t){color, key};
        st = terse__allgather_bytes(comm, what, call, (char *)all, off, len);
    }
    int bad = -1, m = 0;
    for (int r = 0; st == TERSE_OK && r < n; r++)
        if (all[r].color < 0 && all[r].color != TERSE_UNDEFINED)
            bad = r;
    if (st == TERSE_OK && bad >= 0) {
        TERSE_WARN(COLL, "comm split: rank %d passed color %lld (colors are >= 0 or TERSE_UNDEFINED)", bad,
                   (long long)all[bad].color);
        st = TERSE_ERR_INVALID_ARG;
    }
    if (st == TERSE_OK && color != TERSE_UNDEFINED) {
        for (int r = 0; r < n; r++)
            if (all[r].color == color)
                members[m++] = r;
        qsort_r(members, (size_t)m, sizeof(int), cmp_member, all);
        for (int i = 0; i < m; i++)
            members[i] = comm->world[members[i]];
        st = terse__comm_new(comm->ctx, terse__comm_child_id(comm->id, what, call, (uint64_t)color), members, m,
                             &comm->cfg, newcomm);
    }
    free(all), free(off), free(len), free(members);
    return st;
}

terse_status_t terse_comm_split(terse_comm_t *comm, int color, int key, terse_comm_t **newcomm)
{
    return split_by(comm, ID_SPLIT, color, key, newcomm);
}

terse_status_t terse_comm_dup(terse_comm_t *comm, terse_comm_t **newcomm)
{
    return split_by(comm, ID_DUP, 0, comm ? comm->rank : 0, newcomm);
}

terse_status_t terse_comm_split_type(terse_comm_t *comm, int type, int key, terse_comm_t **newcomm)
{
    if (!comm || !newcomm)
        return TERSE_ERR_INVALID_ARG;
    /* A bad type still takes part, as an invalid color: every rank then
     * learns of it and fails alike. */
    int color = -2;
    if (type == TERSE_SPLIT_NODE) {
        /* the node's color: its lowest rank in comm */
        uint64_t me = comm->ctx->host[comm->ctx->rank];
        for (int r = 0; r < comm->size && color < 0; r++)
            if (comm->ctx->host[comm->world[r]] == me)
                color = r;
    } else {
        TERSE_WARN(COLL, "comm split_type: unknown type %d", type);
    }
    terse_status_t st = split_by(comm, ID_NODE, color, key, newcomm);
    return st == TERSE_OK && color < 0 ? TERSE_ERR_INVALID_ARG : st;
}

terse_status_t terse_comm_create_group(terse_comm_t *comm, int nranks, const int *ranks, terse_comm_t **newcomm)
{
    if (!comm || !newcomm)
        return TERSE_ERR_INVALID_ARG;
    *newcomm = NULL;
    if (comm->error != TERSE_OK)
        return comm->error;
    if (nranks < 1 || nranks > comm->size || !ranks) {
        TERSE_WARN(COLL, "comm create_group: %d ranks of a communicator of %d", nranks, comm->size);
        return TERSE_ERR_INVALID_ARG;
    }
    char *seen = calloc((size_t)comm->size, 1);
    int *world = malloc(sizeof(int) * (size_t)nranks), in = 0;
    if (!seen || !world) {
        free(seen), free(world);
        return TERSE_ERR_NO_MEMORY;
    }
    terse_status_t st = TERSE_OK;
    for (int i = 0; i < nranks && st == TERSE_OK; i++) {
        if (ranks[i] < 0 || ranks[i] >= comm->size || seen[ranks[i]]) {
            TERSE_WARN(COLL, "comm create_group: ranks[%d] = %d is %s", i, ranks[i],
                       ranks[i] < 0 || ranks[i] >= comm->size ? "out of range" : "listed twice");
            st = TERSE_ERR_INVALID_ARG;
            break;
        }
        seen[ranks[i]] = 1;
        in |= ranks[i] == comm->rank;
        world[i] = comm->world[ranks[i]];
    }
    if (st == TERSE_OK && !in) {
        TERSE_WARN(COLL, "comm create_group: rank %d called it but is not in the list", comm->rank);
        st = TERSE_ERR_INVALID_ARG;
    }
    if (st == TERSE_OK) {
        uint64_t h = terse__hash64(ranks, sizeof(int) * (size_t)nranks, (uint64_t)nranks);
        terse_group_count_t *g = comm->groups;
        while (g && g->hash != h)
            g = g->next;
        if (!g && (g = calloc(1, sizeof(*g))) != NULL) {
            g->hash = h;
            g->next = comm->groups;
            comm->groups = g;
        }
        st = g ? terse__comm_new(comm->ctx, terse__comm_child_id(comm->id, ID_GROUP, h, g->count++), world, nranks,
                                 &comm->cfg, newcomm)
               : TERSE_ERR_NO_MEMORY;
    }
    free(seen);
    free(world);
    return st;
}

/* ---- queries ---------------------------------------------------------- */

int terse_comm_rank(const terse_comm_t *comm) { return comm ? comm->rank : -1; }
int terse_comm_size(const terse_comm_t *comm) { return comm ? comm->size : -1; }
const char *terse_comm_transport(const terse_comm_t *comm) { return comm ? comm->ctx->tp_ops->name : "none"; }

/* Ranks below `upto` in comm on this process's host. */
static int same_host_below(const terse_comm_t *comm, int upto)
{
    const uint64_t *host = comm->ctx->host, me = host[comm->ctx->rank];
    int k = 0;
    for (int r = 0; r < upto; r++)
        k += host[comm->world[r]] == me;
    return k;
}

int terse_comm_local_rank(const terse_comm_t *comm) { return comm ? same_host_below(comm, comm->rank) : -1; }
int terse_comm_local_size(const terse_comm_t *comm) { return comm ? same_host_below(comm, comm->size) : -1; }

int terse_comm_node_count(const terse_comm_t *comm)
{
    if (!comm)
        return -1;
    const uint64_t *host = comm->ctx->host;
    int k = 0;
    for (int r = 0; r < comm->size; r++) {
        int first = 1;
        for (int s = 0; s < r && first; s++)
            first = host[comm->world[s]] != host[comm->world[r]];
        k += first;
    }
    return k;
}

terse_status_t terse_comm_error(const terse_comm_t *comm, const char **detail)
{
    if (!comm)
        return TERSE_ERR_INVALID_ARG;
    terse__ctx_lock(comm->ctx);
    if (detail)
        *detail = comm->error_detail;
    terse_status_t st = comm->error;
    terse__ctx_unlock(comm->ctx);
    return st;
}

terse_status_t terse_comm_stats(const terse_comm_t *comm, terse_comm_stats_t *stats)
{
    if (!comm || !stats)
        return TERSE_ERR_INVALID_ARG;
    terse__ctx_lock(comm->ctx);
    *stats = comm->stats;
    stats->reg_created = comm->ctx->reg_created;
    stats->reg_hits = comm->ctx->reg_hits;
    stats->reg_misses = comm->ctx->reg_misses;
    terse_tp_stats_t t = {0, 0};
    comm->ctx->tp_ops->stats(comm->ctx->tp, &t);
    stats->connections = (uint64_t)t.connections;
    stats->pinned_bytes = t.pinned_bytes;
    stats->parked_bytes = comm->ctx->stash_bytes;
    terse__ctx_unlock(comm->ctx);
    return TERSE_OK;
}

void terse_config_print(void *file) { terse__config_print(file ? (FILE *)file : stdout); }
