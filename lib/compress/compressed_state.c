/*
 * compressed_state.c - checkpoint and restore of a compressed allreduce.
 *
 * Layout (host byte order; a checkpoint is for the same kind of machine):
 *   "TRSECMP1", u32 version, rank, size, 0, u64 count, parameter signature,
 *   steps, error averages, bytes (total, last), both random streams
 *   (seed, counter), u64 owned chunk length,
 *   float e[count], float server residual[owned], u64 hash of all before.
 * Restoring into a handle with another rank, size, count or parameters is
 * refused: the resumed run would not be the one that was saved.
 */
#include "compressed.h"
#include "../log.h"
#include "../net.h"

#include <string.h>

#define STATE_MAGIC "TRSECMP1"
#define STATE_VERSION 1u

typedef struct state_hdr {
    char magic[8];
    uint32_t version, rank, size, pad;
    uint64_t count, sig;
    uint64_t steps, error_averages, bytes_total, bytes_last;
    uint64_t rng[4];
    uint64_t own;
} state_hdr_t;

size_t terse_compressed_state_size(const terse_compressed_t *c)
{
    if (!c)
        return 0;
    return sizeof(state_hdr_t) + (c->count + c->len[c->r]) * sizeof(float) + sizeof(uint64_t);
}

terse_status_t terse_compressed_save(const terse_compressed_t *c, void *buf, size_t len)
{
    if (!c || !buf || len < terse_compressed_state_size(c))
        return TERSE_ERR_INVALID_ARG;
    size_t own = c->len[c->r];
    state_hdr_t h;
    memset(&h, 0, sizeof(h));
    memcpy(h.magic, STATE_MAGIC, 8);
    h.version = STATE_VERSION;
    h.rank = (uint32_t)c->r;
    h.size = (uint32_t)c->n;
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
    size_t body = sizeof(h) + (c->count + own) * sizeof(float);
    uint64_t sum = terse__hash64(o, body, 0x73746174ull);
    memcpy(o + body, &sum, sizeof(sum));
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
    size_t want = terse_compressed_state_size(c), own = c->len[c->r];
    state_hdr_t h;
    if (len < sizeof(h))
        REFUSE("%zu bytes is too short for a checkpoint", len);
    memcpy(&h, buf, sizeof(h));
    if (memcmp(h.magic, STATE_MAGIC, 8) != 0)
        REFUSE("not a terse compressed-allreduce checkpoint");
    if (h.version != STATE_VERSION)
        REFUSE("checkpoint version %u, this library reads %u", h.version, STATE_VERSION);
    if (h.rank != (uint32_t)c->r || h.size != (uint32_t)c->n)
        REFUSE("checkpoint of rank %u of %u, this is rank %d of %d", h.rank, h.size, c->r, c->n);
    if (h.count != c->count || h.own != own)
        REFUSE("checkpoint of %llu values, this handle has %zu", (unsigned long long)h.count, c->count);
    if (h.sig != c->sig)
        REFUSE("checkpoint made with other codec or parameters");
    if (len != want)
        REFUSE("checkpoint is %zu bytes, expected %zu", len, want);
    const char *in = buf;
    size_t body = want - sizeof(uint64_t);
    uint64_t sum;
    memcpy(&sum, in + body, sizeof(sum));
    if (sum != terse__hash64(in, body, 0x73746174ull))
        REFUSE("checkpoint is corrupt (checksum)");
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
