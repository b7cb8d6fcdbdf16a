/*
 * compressed_step.c - a step of the compressed allreduce as one schedule,
 * run by the executor like any collective:
 *
 *   two-phase: encode chunk j (a call) -> its code to owner j; the codes of
 *              our chunk from every rank -> added in rank order (calls) ->
 *              the owner's re-encode (a call) -> ring allgather of the
 *              owners' codes;
 *   ring:      at each hop, encode our partial sum of a block (a call) ->
 *              right; the left neighbour's code -> added (a call); the
 *              owned block's sum -> the owner's re-encode -> as two-phase;
 *   allgather: encode the whole tensor (a call) -> ring allgather of codes;
 *   then, every H steps, the dense allreduce (AVG) of the new residuals,
 *   gated behind the encodes.
 *
 * One call runs per executor pass, so a chunk's code is on the wire while
 * the next is encoded. When the request ends, the codes received are decoded
 * into recvbuf and the state is committed - or, if it failed, the random
 * streams are put back: a failed or cancelled step changes nothing.
 * Arithmetic and order are those of the blocking algorithms, so results are
 * the same bits.
 */
#include "compressed.h"
#include "../coll/coll.h"
#include "../log.h"
#include "../progress.h"
#include "../net.h"

#include <stdlib.h>
#include <string.h>

static void warn_input(const terse_compressed_t *c, const char *what)
{
    TERSE_WARN(COLL, "compressed allreduce step %llu: %s holds NaN or infinity", (unsigned long long)c->steps + 1,
               what);
}

/* Worker encode of chunk j (-1: the whole tensor) into code (want bytes);
 * values that are not finite give a poisoned code. */
static terse_status_t encode_into(terse_compressed_t *c, int chunk, size_t off, size_t n, char *code, size_t want)
{
    int fb = c->p.error_feedback;
    size_t len;
    terse__compressed_set_seed(c, chunk);
    terse_status_t st = terse__compressed_encode(c, c->up, c->u + off, fb ? c->e + off : NULL,
                                                 fb ? c->e_next + off : NULL, n, code, &len, &c->rng_up);
    if (st == TERSE_ERR_INVALID_ARG) {
        warn_input(c, chunk < 0 ? "this rank's input" : "a chunk of this rank's input");
        terse__codec_put_poison(code, c->up->id, n, want);
        return TERSE_OK;
    }
    return st == TERSE_OK && len != want ? TERSE_ERR_PROTOCOL : st;
}

static terse_status_t call_encode_whole(terse_request_t *req, void *arg, size_t idx)
{
    (void)req, (void)idx;
    terse_compressed_t *c = arg;
    return encode_into(c, -1, 0, c->count, c->in_codes + c->in_off[c->r], c->in_len[c->r]);
}

static terse_status_t call_encode_chunk(terse_request_t *req, void *arg, size_t j)
{
    (void)req;
    terse_compressed_t *c = arg;
    return encode_into(c, (int)j, c->off[j], c->len[j], c->up_codes + c->up_off[j], c->up_len[j]);
}

/* Rank i's code of our chunk, added to the chunk's sum (in rank order). */
static terse_status_t call_add(terse_request_t *req, void *arg, size_t idx)
{
    (void)req;
    terse_compressed_t *c = arg;
    int i = (int)idx, r = c->r;
    const char *code = i == r ? c->up_codes + c->up_off[r] : c->in_codes + c->in_off[i];
    size_t len = i == r ? c->up_len[r] : c->in_len[i];
    if (terse__codec_poisoned(code, len))
        c->bad_sum = 1;
    if (c->bad_sum)
        return TERSE_OK;
    size_t own = c->len[r];
    terse_status_t st = i == 0 ? terse__compressed_decode(c, c->up, code, len, c->acc, own)
                               : c->up->decode_add(&c->cp, code, len, c->acc, own);
    return st == TERSE_OK ? TERSE_OK : terse__compressed_bad_code(c, i, c->up->name);
}

/* The owner re-compresses its chunk's sum; a sum that is not finite (or a
 * poisoned contribution) gives a poisoned code, which every rank will see. */
static terse_status_t call_owner(terse_request_t *req, void *arg, size_t idx)
{
    (void)req, (void)idx;
    terse_compressed_t *c = arg;
    int r = c->r;
    terse_status_t st = TERSE_OK;
    if (!c->bad_sum && (st = terse__compressed_owner(c, c->acc)) != TERSE_OK) {
        if (st != TERSE_ERR_INVALID_ARG)
            return st;
        TERSE_WARN(COLL, "compressed allreduce step %llu: the sum of chunk %d is not finite",
                   (unsigned long long)c->steps + 1, r);
        c->bad_sum = 1;
    }
    if (c->bad_sum)
        terse__codec_put_poison(c->down_codes + c->down_off[r], c->down->id, c->len[r], c->down_len[r]);
    return TERSE_OK;
}

/* Ring: at hop t, encode our partial sum of block b(t) (to the right);
 * once anything was not finite, only poison goes on round the ring. */
static int ring_block(const terse_compressed_t *c, int t) { return (c->r + 2 * c->n - t - 1) % c->n; }

static terse_status_t call_ring_encode(terse_request_t *req, void *arg, size_t t)
{
    (void)req;
    terse_compressed_t *c = arg;
    int b = ring_block(c, (int)t);
    char *code = c->up_codes + c->up_off[b];
    if (c->bad_sum) {
        terse__codec_put_poison(code, c->up->id, c->len[b], c->up_len[b]);
        return TERSE_OK;
    }
    size_t len;
    terse__compressed_set_seed(c, b);
    terse_status_t st = terse__compressed_encode(c, c->up, c->u + c->off[b], NULL, NULL, c->len[b], code, &len,
                                                 &c->rng_up);
    if (st == TERSE_ERR_INVALID_ARG) {
        TERSE_WARN(COLL, "compressed allreduce step %llu: a partial sum of block %d is not finite",
                   (unsigned long long)c->steps + 1, b);
        terse__codec_put_poison(code, c->up->id, c->len[b], c->up_len[b]);
        c->bad_sum = 1;
        return TERSE_OK;
    }
    return st == TERSE_OK && len != c->up_len[b] ? TERSE_ERR_PROTOCOL : st;
}

/* ... and add the left neighbour's code of block b(t + 1) to ours */
static terse_status_t call_ring_add(terse_request_t *req, void *arg, size_t t)
{
    (void)req;
    terse_compressed_t *c = arg;
    int rb = ring_block(c, (int)t + 1);
    const char *code = c->in_codes + c->in_off[rb];
    if (terse__codec_poisoned(code, c->in_len[rb]))
        c->bad_sum = 1;
    if (c->bad_sum)
        return TERSE_OK;
    if (c->up->decode_add(&c->cp, code, c->in_len[rb], c->e_next + c->off[rb], c->len[rb]) != TERSE_OK)
        return terse__compressed_bad_code(c, (c->r + c->n - 1) % c->n, c->up->name);
    return TERSE_OK;
}

/* the owned block's sum is complete: to the owner's re-encode */
static terse_status_t call_ring_own(terse_request_t *req, void *arg, size_t idx)
{
    (void)idx;
    terse_compressed_t *c = arg;
    memcpy(c->acc, c->e_next + c->off[c->r], c->len[c->r] * sizeof(float));
    return call_owner(req, arg, 0);
}

/* Ring reduce-scatter: partial sums formed in e_next (no worker feedback
 * in a ring). Returns the op after which the owner's code is ready. */
static int build_ring(terse_request_t *req, terse_compressed_t *c, int *last_encode)
{
    int n = c->n, r = c->r, right = (r + 1) % n, left = (r + n - 1) % n, prev = -1, rc = 0;
    size_t chunk = c->comm->chunk;
    memcpy(c->e_next, c->u, c->count * sizeof(float));
    c->u = c->e_next;
    *last_encode = -1;
    for (int t = 0; t < n - 1 && !rc; t++) {
        int b = ring_block(c, t), rb = ring_block(c, t + 1), enc, got = -1;
        rc |= (enc = terse__sched_call(req, call_ring_encode, (size_t)t, prev, -1)) < 0;
        *last_encode = enc;
        for (size_t o = 0; !rc && (o < c->up_len[b] || o == 0); o += chunk) {
            size_t l = c->up_len[b] - o < chunk ? c->up_len[b] - o : chunk;
            rc |= terse__sched_add(req, TERSE_OPK_SEND, TERSE_ACT_NONE, right, NULL, c->up_codes + c->up_off[b] + o,
                                   l, enc, -1) < 0;
            c->step_bytes += l;
        }
        for (size_t o = 0; !rc && (o < c->in_len[rb] || o == 0); o += chunk) {
            size_t l = c->in_len[rb] - o < chunk ? c->in_len[rb] - o : chunk;
            rc |= (got = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, left, c->in_codes + c->in_off[rb] + o,
                                          NULL, l, -1, -1)) < 0;
        }
        rc |= (prev = terse__sched_call(req, call_ring_add, (size_t)t, got, enc)) < 0;
    }
    int own = rc ? -1 : terse__sched_call(req, call_ring_own, 0, prev, -1);
    return rc ? -1 : own;
}

/* The request ended: decode the codes every rank has into recvbuf, then
 * commit the step, or put everything back. */
static terse_status_t step_done(terse_request_t *req, void *arg, terse_status_t st)
{
    terse_compressed_t *c = arg;
    int n = c->n;
    int two = c->algo != TERSE_COMPRESSED_ALLGATHER; /* two-phase and ring end with the owners' codes */
    const char *codes = two ? c->down_codes : c->in_codes;
    const size_t *off = two ? c->down_off : c->in_off, *len = two ? c->down_len : c->in_len;
    for (int j = 0; st == TERSE_OK && j < n; j++)
        if (terse__codec_poisoned(codes + off[j], len[j])) {
            TERSE_WARN(COLL, "compressed allreduce step %llu: rank %d's input (or a sum with it) holds NaN or "
                             "infinity", (unsigned long long)c->steps + 1, j);
            st = TERSE_ERR_INVALID_ARG;
        }
    for (int j = 0; st == TERSE_OK && j < n; j++) {
        terse_status_t d;
        if (two)
            d = terse__compressed_decode(c, c->down, codes + off[j], len[j], c->out + c->off[j], c->len[j]);
        else
            d = j == 0 ? terse__compressed_decode(c, c->up, codes + off[j], len[j], c->out, c->count)
                       : c->up->decode_add(&c->cp, codes + off[j], len[j], c->out, c->count);
        if (d != TERSE_OK)
            st = terse__compressed_bad_code(c, j, two ? c->down->name : c->up->name);
    }
    if (st == TERSE_OK && !two && c->p.op == TERSE_AVG)
        for (size_t i = 0; i < c->count; i++)
            c->out[i] /= (float)n;
    if (st != TERSE_OK) {
        c->rng_up = c->rng_up0, c->rng_down = c->rng_down0; /* as if the step never happened */
    } else {
        if (c->p.error_feedback) {
            float *t = c->e;
            c->e = c->e_next, c->e_next = t;
        }
        if (c->p.server_error_feedback) {
            float *t = c->se;
            c->se = c->se_next, c->se_next = t;
        }
        c->steps++;
        c->error_averages += (uint64_t)c->averaging;
        c->bytes_last = c->step_bytes;
        c->bytes_total += c->bytes_last;
    }
    req->on_done = NULL; /* c->inflight stays until the caller reaps req */
    return st;
}

/* The two-phase part: encodes, uplink codes to the owners, the owner's sum
 * and re-encode. Returns the op after which the owner's code is ready, and
 * in *last_encode the last encode. */
static int build_two_phase(terse_request_t *req, terse_compressed_t *c, int *last_encode)
{
    int n = c->n, r = c->r, rc = 0;
    int *enc = calloc((size_t)n, sizeof(int)), *got = calloc((size_t)n, sizeof(int));
    if (!enc || !got) {
        free(enc), free(got);
        return -1;
    }
    size_t chunk = c->comm->chunk;
    /* encode chunk by chunk, in chunk order (the random streams' order), each
     * code on its way to its owner while the next is encoded */
    for (int j = 0; j < n && !rc; j++) {
        rc |= (enc[j] = terse__sched_call(req, call_encode_chunk, (size_t)j, -1, -1)) < 0;
        for (size_t o = 0; j != r && !rc && (o < c->up_len[j] || o == 0); o += chunk) {
            size_t l = c->up_len[j] - o < chunk ? c->up_len[j] - o : chunk;
            rc |= terse__sched_add(req, TERSE_OPK_SEND, TERSE_ACT_NONE, j, NULL, c->up_codes + c->up_off[j] + o, l,
                                   enc[j], -1) < 0;
            c->step_bytes += l;
        }
    }
    *last_encode = enc[n - 1];
    for (int k = 1; k < n && !rc; k++) {
        int i = (r + n - k) % n;
        got[i] = -1;
        for (size_t o = 0; !rc && (o < c->in_len[i] || o == 0); o += chunk) {
            size_t l = c->in_len[i] - o < chunk ? c->in_len[i] - o : chunk;
            rc |= (got[i] = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, i, c->in_codes + c->in_off[i] + o,
                                             NULL, l, -1, -1)) < 0;
        }
    }
    got[r] = enc[r];
    /* the owned chunk's sum, in rank order, then the re-encode */
    int prev = -1;
    for (int i = 0; i < n && !rc; i++)
        rc |= (prev = terse__sched_call(req, call_add, (size_t)i, got[i], prev)) < 0;
    int owner = rc ? -1 : terse__sched_call(req, call_owner, 0, prev, -1);
    free(enc), free(got);
    return rc ? -1 : owner;
}

/* Ring allgather of the byte blocks codes[off[j], + len[j]), our own ready after op `ready`. */
static int build_gather(terse_request_t *req, terse_compressed_t *c, char *codes, const size_t *off,
                        const size_t *len, int ready)
{
    int n = c->n;
    if (n == 1)
        return 0;
    terse_blocks_t b;
    if (terse__blocks_v(&b, n, len, off, 1, c->comm->chunk))
        return -1;
    int own = terse__blocks_nchunks(&b, c->r), *rdy = malloc(sizeof(int) * (size_t)(own ? own : 1));
    int rc = !rdy;
    for (int k = 0; !rc && k < own; k++)
        rdy[k] = ready;
    int first = req->nops;
    if (!rc)
        rc = terse__ring_allgather(req, &b, codes, codes + off[c->r], rdy, NULL);
    for (int i = first; !rc && i < req->nops; i++)
        if (req->ops[i].kind == TERSE_OPK_SEND)
            c->step_bytes += req->ops[i].bytes;
    free(rdy);
    terse__blocks_free(&b);
    return rc;
}

terse_status_t terse__compressed_start(terse_compressed_t *c, const float *sendbuf, float *recvbuf,
                                       terse_request_t **out)
{
    terse_comm_t *comm = c->comm;
    uint64_t step = c->steps + 1;
    int average = c->p.error_feedback && c->p.error_average_every && step % (uint64_t)c->p.error_average_every == 0;
    /* op AVG: the residual average appended behind the step reduces with it */
    terse_request_t *req;
    terse_status_t st = terse__sched_new(comm, TERSE_COLL_COMPRESSED, TERSE_FLOAT32, TERSE_AVG, -1, c->count,
                                         c->sig ^ (uint64_t)average, &req);
    if (st != TERSE_OK)
        return st;
    c->u = sendbuf;
    c->out = recvbuf;
    c->bad_sum = 0;
    c->step_bytes = 0;
    c->averaging = average;
    c->rng_up0 = c->rng_up, c->rng_down0 = c->rng_down;
    int rc = 0, last_encode;
    if (c->algo != TERSE_COMPRESSED_ALLGATHER) {
        int owner = c->algo == TERSE_COMPRESSED_RING ? build_ring(req, c, &last_encode)
                                                     : build_two_phase(req, c, &last_encode);
        rc = owner < 0 || build_gather(req, c, c->down_codes, c->down_off, c->down_len, owner);
    } else {
        last_encode = terse__sched_call(req, call_encode_whole, 0, -1, -1);
        rc = last_encode < 0 || build_gather(req, c, c->in_codes, c->in_off, c->in_len, last_encode);
    }
    if (!rc && average && c->n > 1) {
        /* every rank's e becomes the mean residual (bit-identical), once encoded */
        int first = req->nops;
        uint64_t algo;
        rc = terse__allreduce_build(req, c->e_next, c->e_next, c->count, &algo);
        terse__sched_gate(req, first, last_encode);
        req->sig = terse__mix64(req->sig, algo);
        for (int i = first; !rc && i < req->nops; i++)
            if (req->ops[i].kind == TERSE_OPK_SEND)
                c->step_bytes += req->ops[i].bytes;
    }
    if (rc) {
        c->rng_up = c->rng_up0, c->rng_down = c->rng_down0;
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    req->call_arg = c;
    req->on_done = step_done;
    c->inflight = req;
    req->owner = &c->inflight;
    st = terse__coll_run(req, out);
    if (INFLIGHT(c) == req && (!out || st != TERSE_OK)) {
        /* refused before it ran (out of memory, a latched error): nothing happened */
        c->inflight = NULL;
        c->rng_up = c->rng_up0, c->rng_down = c->rng_down0;
    }
    return st;
}
