/*
 * compressed_state.c - checkpoint and restore of a compressed allreduce.
 *
 * Layout, in the shared frame of checkpoint.h:
 *   identity ("TRSECMP1", version 2, rank, size), u64 count, parameter
 *   signature, steps, error averages, bytes (total, last), both random
 *   streams (seed, counter), u64 owned chunk length,
 *   float e[count], float server residual[owned], hash of all before.
 * Restoring into a handle with another rank, size, count or parameters is
 * refused: the resumed run would not be the one that was saved.
 */
#include "compressed.h"
#include "../checkpoint.h"
#include "../log.h"
#include "../progress.h"

#include <string.h>

#define STATE_MAGIC "TRSECMP1"
#define STATE_VERSION 2u

typedef struct state_hdr {
    terse_ckpt_id_t id;
    uint64_t count, sig;
    uint64_t steps, error_averages, bytes_total, bytes_last;
    uint64_t rng[4];
    uint64_t own;
} state_hdr_t;

size_t terse_compressed_state_size(const terse_compressed_t *c)
{
    if (!c)
        return 0;
    return sizeof(state_hdr_t) + (c->count + c->len[c->r]) * sizeof(float) + TERSE_CKPT_TRAILER;
}

terse_status_t terse_compressed_save(const terse_compressed_t *c, void *buf, size_t len)
{
    if (!c || !buf || len < terse_compressed_state_size(c))
        return TERSE_ERR_INVALID_ARG;
    if (INFLIGHT(c)) {
        TERSE_WARN(COLL, "compressed_save: a step is in flight; wait for it, then save");
        return TERSE_ERR_BUSY;
    }
    size_t own = c->len[c->r];
    state_hdr_t h;
    memset(&h, 0, sizeof(h));
    terse__ckpt_id(&h.id, STATE_MAGIC, STATE_VERSION, c->r, c->n);
    h.count = c->count;
    h.sig = c->sig;
    h.steps = c->steps;
    h.error_averages = c->error_averages;
    h.bytes_total = c->bytes_total;
    h.bytes_last = c->bytes_last;
    h.rng[0] = c->rng_up.seed, h.rng[1] = c->rng_up.counter;
    h.rng[2] = c->rng_down.seed, h.rng[3] = c->rng_down.counter;
    h.own = own;
    char *o = buf;
    memcpy(o, &h, sizeof(h));
    memcpy(o + sizeof(h), c->e, c->count * sizeof(float));
    memcpy(o + sizeof(h) + c->count * sizeof(float), c->se, own * sizeof(float));
    terse__ckpt_seal(o, sizeof(h) + (c->count + own) * sizeof(float));
    return TERSE_OK;
}

#define REFUSE(...)                                            \
    do {                                                       \
        TERSE_WARN(COLL, "compressed_load: " __VA_ARGS__);     \
        return TERSE_ERR_INVALID_ARG;                          \
    } while (0)

terse_status_t terse_compressed_load(terse_compressed_t *c, const void *buf, size_t len)
{
    if (!c || !buf)
        return TERSE_ERR_INVALID_ARG;
    if (INFLIGHT(c)) {
        TERSE_WARN(COLL, "compressed_load: a step is in flight; wait for it, then load");
        return TERSE_ERR_BUSY;
    }
    size_t want = terse_compressed_state_size(c), own = c->len[c->r];
    if (terse__ckpt_check(buf, len, STATE_MAGIC, STATE_VERSION, c->r, c->n, "compressed_load") != TERSE_OK)
        return TERSE_ERR_INVALID_ARG;
    state_hdr_t h;
    if (len < sizeof(h))
        REFUSE("%zu bytes is too short for a checkpoint", len);
    memcpy(&h, buf, sizeof(h));
    if (h.count != c->count || h.own != own)
        REFUSE("checkpoint of %llu values, this handle has %zu", (unsigned long long)h.count, c->count);
    if (h.sig != c->sig)
        REFUSE("checkpoint made with other codec or parameters");
    if (len != want)
        REFUSE("checkpoint is %zu bytes, expected %zu", len, want);
    const char *in = buf;
    memcpy(c->e, in + sizeof(h), c->count * sizeof(float));
    memcpy(c->se, in + sizeof(h) + c->count * sizeof(float), own * sizeof(float));
    c->steps = h.steps;
    c->error_averages = h.error_averages;
    c->bytes_total = h.bytes_total;
    c->bytes_last = h.bytes_last;
    c->rng_up = (terse_rng_t){h.rng[0], h.rng[1]};
    c->rng_down = (terse_rng_t){h.rng[2], h.rng[3]};
    return TERSE_OK;
}
