/*
 * shrink.c - terse_comm_shrink: the survivors of a failure agree on who
 * they are and get a communicator of just those ranks.
 *
 * Agreement is a flooding of suspect sets (bitmaps over comm's ranks): each
 * round, every rank sends its set to every rank it does not suspect and
 * receives theirs; the union becomes its new set. A round in which every set
 * received equals the rank's own ends it. If two live ranks' sets differ,
 * every live rank that hears from both sees a difference, so either all
 * stop in the same round or none does. Suspects start as the peers whose
 * connection is gone; a rank that does not answer a round within the
 * timeout, or whose connection fails during it, is named in an abort that
 * fails that round on every member, and joins the set. A rank that
 * finds itself in the union (it was stopped, or slow beyond the timeout) is
 * excluded and gets an error. Excluded peers are fenced in the context:
 * nothing they send is read any more.
 */
#include "comm.h"
#include "executor.h"
#include "log.h"
#include "net.h"

#include <stdlib.h>
#include <string.h>

#define ID_SHRINK 0x736872696e6bull /* "shrink" */

#define BIT(set, i) (((set)[(i) / 64] >> ((i) % 64)) & 1)
#define SET(set, i) ((set)[(i) / 64] |= 1ull << ((i) % 64))

/* Only what is certain: peers whose connection is gone. Who merely timed
 * out is found again by the rounds, where every live rank answers at once. */
static void initial_suspects(const terse_comm_t *comm, uint64_t *s)
{
    const terse_ctx_t *ctx = comm->ctx;
    for (int q = 0; q < comm->size; q++) {
        const terse_chan_t *ch = &ctx->chans[comm->world[q]];
        if (q != comm->rank && (ch->lost || ch->bye || ch->fenced))
            SET(s, q);
    }
}

/* One round: send mine to every rank not suspected, receive theirs. */
static terse_status_t round_trip(terse_comm_t *agree, const uint64_t *mine, uint64_t *theirs, size_t bytes,
                                 int round)
{
    terse_request_t *req;
    terse_status_t st = terse__sched_new(agree, TERSE_COLL_AGREE, TERSE_INT64, TERSE_SUM, -1, (uint64_t)round,
                                         (uint64_t)agree->size, &req);
    if (st != TERSE_OK)
        return st;
    for (int q = 0; q < agree->size; q++) {
        if (q == agree->rank || BIT(mine, q))
            continue;
        if (terse__sched_add(req, TERSE_OPK_SEND, TERSE_ACT_NONE, q, NULL, mine, bytes, -1, -1) < 0 ||
            terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, q, (char *)theirs + (size_t)q * bytes, NULL,
                             bytes, -1, -1) < 0) {
            terse__sched_free(req);
            return TERSE_ERR_NO_MEMORY;
        }
    }
    if ((st = terse__exec_submit(req)) != TERSE_OK)
        return st;
    return terse_request_wait(req);
}

/* Flood until stable. Returns TERSE_OK with the agreed set in s, or an error
 * (this rank was excluded, or the agreement could not finish). */
static terse_status_t agree(terse_comm_t *comm, terse_comm_t *ag, uint64_t *s, int words)
{
    int n = comm->size;
    size_t bytes = sizeof(uint64_t) * (size_t)words;
    uint64_t *theirs = malloc(bytes * (size_t)n);
    if (!theirs)
        return TERSE_ERR_NO_MEMORY;
    terse_status_t st = TERSE_ERR_PEER_FAILED;
    for (int round = 0; round <= n + 1; round++) {
        if (BIT(s, comm->rank)) {
            st = TERSE_ERR_PEER_FAILED;
            TERSE_WARN(COLL, "comm shrink: the other ranks excluded rank %d (it was stopped, slow or "
                             "cut off beyond the timeout)", comm->rank);
            break;
        }
        memset(theirs, 0, bytes * (size_t)n);
        terse_status_t rt = round_trip(ag, s, theirs, bytes, round);
        if (rt != TERSE_OK) {
            /* someone failed during the round (here, or where the abort came
             * from): suspect it, go again - also when it was suspected here
             * already, since others only learn it now */
            int w = ag->suspect >= 0 ? ag->suspect : ag->error_culprit;
            int culprit = w >= 0 ? ag->rank_of[w] : -1;
            if (culprit == comm->rank || rt == TERSE_ERR_NO_MEMORY || rt == TERSE_ERR_INVALID_ARG) {
                st = rt;
                break;
            }
            if (culprit >= 0)
                SET(s, culprit);
            ag->error = TERSE_OK; /* internal: the next round is a new call */
            ag->suspect = ag->error_culprit = -1;
            continue;
        }
        int changed = 0;
        for (int q = 0; q < n; q++) {
            if (q == comm->rank || BIT(s, q))
                continue;
            const uint64_t *t = theirs + (size_t)q * (size_t)words;
            for (int w = 0; w < words; w++)
                changed |= t[w] != s[w];
        }
        for (int q = 0; q < n; q++)
            if (q != comm->rank && !BIT(s, q))
                for (int w = 0; w < words; w++)
                    s[w] |= theirs[(size_t)q * (size_t)words + (size_t)w];
        if (!changed) {
            int alone = 1;
            for (int q = 0; q < n; q++)
                alone &= q == comm->rank || BIT(s, q);
            st = alone && n > 1 ? TERSE_ERR_PEER_FAILED : TERSE_OK;
            if (st != TERSE_OK)
                TERSE_WARN(COLL, "comm shrink: rank %d heard from no other rank: it was cut off", comm->rank);
            break;
        }
    }
    free(theirs);
    return st;
}

terse_status_t terse_comm_shrink(terse_comm_t *comm, terse_comm_t **newcomm)
{
    if (!comm || !newcomm)
        return TERSE_ERR_INVALID_ARG;
    *newcomm = NULL;
    terse_ctx_t *ctx = comm->ctx;
    int n = comm->size, words = (n + 63) / 64;
    uint64_t *s = calloc((size_t)words, sizeof(uint64_t));
    int *world = malloc(sizeof(int) * (size_t)n);
    terse_comm_t *ag = NULL;
    terse_status_t st = s && world ? TERSE_OK : TERSE_ERR_NO_MEMORY;
    uint64_t call = comm->shrinks++;
    if (st == TERSE_OK)
        st = terse__comm_new(ctx, terse__comm_child_id(comm->id, ID_SHRINK, call, 0), comm->world, n, &comm->cfg,
                             &ag);
    if (st == TERSE_OK) {
        ag->internal = 1;
        initial_suspects(comm, s);
        st = agree(comm, ag, s, words);
    }
    int m = 0;
    if (st == TERSE_OK) {
        for (int q = 0; q < n; q++) {
            if (!BIT(s, q))
                world[m++] = comm->world[q];
            else if (comm->world[q] != ctx->rank)
                terse__exec_drop_peer(ctx, comm->world[q]); /* cut off: nothing it sends is read */
        }
        uint64_t h = terse__hash64(s, sizeof(uint64_t) * (size_t)words, (uint64_t)n);
        st = terse__comm_new(ctx, terse__comm_child_id(comm->id, ID_SHRINK, call, h), world, m, &comm->cfg,
                             newcomm);
        TERSE_INFO(COLL, "comm shrink: %d of %d ranks remain", m, n);
    }
    if (ag)
        terse__comm_free(ag);
    free(s);
    free(world);
    return st;
}
