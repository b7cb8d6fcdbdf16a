/*
 * ring.c - block layout helpers and the two ring phases (reduce-scatter,
 * allgather). Every block is cut into chunks; chunk c of a block only waits
 * for chunk c of the previous step, so chunks pipeline around the ring.
 */
#include "coll.h"

#include <stdlib.h>

static int blocks_alloc(terse_blocks_t *b, int n, size_t chunk)
{
    b->n = n;
    b->chunk = chunk;
    b->off = calloc((size_t)n, sizeof(size_t));
    b->len = calloc((size_t)n, sizeof(size_t));
    b->cbase = calloc((size_t)n + 1, sizeof(int));
    return (b->off && b->len && b->cbase) ? 0 : -1;
}

static void blocks_chunks(terse_blocks_t *b)
{
    for (int i = 0; i < b->n; i++)
        b->cbase[i + 1] = b->cbase[i] + (int)((b->len[i] + b->chunk - 1) / b->chunk);
}

int terse__blocks_even(terse_blocks_t *b, int n, size_t count, size_t esz, size_t chunk)
{
    if (blocks_alloc(b, n, chunk - chunk % esz))
        return -1;
    size_t base = count / (size_t)n, rem = count % (size_t)n, pos = 0;
    for (int i = 0; i < n; i++) {
        size_t k = base + ((size_t)i < rem);
        b->off[i] = pos * esz;
        b->len[i] = k * esz;
        pos += k;
    }
    blocks_chunks(b);
    return 0;
}

int terse__blocks_v(terse_blocks_t *b, int n, const size_t *counts, const size_t *displs,
                    size_t esz, size_t chunk)
{
    if (blocks_alloc(b, n, chunk - chunk % esz))
        return -1;
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        b->off[i] = (displs ? displs[i] : pos) * esz;
        b->len[i] = counts[i] * esz;
        pos += counts[i];
    }
    blocks_chunks(b);
    return 0;
}

void terse__blocks_free(terse_blocks_t *b)
{
    free(b->off);
    free(b->len);
    free(b->cbase);
}

int terse__ring_reduce_scatter(terse_request_t *req, const terse_blocks_t *b, const char *in,
                               char *acc, char *final_dst, int *fin, int *sent)
{
    int n = b->n, r = req->comm->rank;
    int right = (r + 1) % n, left = (r + n - 1) % n;
    int total = b->cbase[n];
    int *recv_op = malloc(sizeof(int) * (size_t)(total ? total : 1));
    if (!recv_op)
        return -1;
    for (int i = 0; i < total; i++)
        sent[i] = recv_op[i] = -1;
    /* Step s: send block r-1-s (own input at s = 0, else the partial just
     * accumulated), receive block r-2-s from the left and fold it into acc.
     * The last step receives block r itself, now holding every contribution. */
    for (int s = 0; s <= n - 2; s++) {
        int sb = (r - 1 - s + 2 * n) % n, rb = (r - 2 - s + 2 * n) % n;
        for (int c = 0; c < terse__blocks_nchunks(b, sb); c++) {
            size_t o = b->off[sb] + (size_t)c * b->chunk;
            int g = b->cbase[sb] + c;
            int op = terse__sched_add(req, TERSE_OPK_SEND, TERSE_ACT_NONE, right, NULL,
                                      (s == 0 ? in : acc) + o, terse__chunk_len(b, sb, c),
                                      s == 0 ? -1 : recv_op[g], -1);
            if (op < 0)
                goto oom;
            sent[g] = op;
        }
        int last = s == n - 2;
        for (int c = 0; c < terse__blocks_nchunks(b, rb); c++) {
            size_t o = b->off[rb] + (size_t)c * b->chunk;
            int op = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_REDUCE3, left,
                                      last ? final_dst + (size_t)c * b->chunk : acc + o, in + o,
                                      terse__chunk_len(b, rb, c), -1, -1);
            if (op < 0)
                goto oom;
            req->ops[op].finalize = (uint8_t)last;
            recv_op[b->cbase[rb] + c] = op;
            if (last)
                fin[c] = op;
        }
    }
    free(recv_op);
    return 0;
oom:
    free(recv_op);
    return -1;
}

int terse__ring_allgather(terse_request_t *req, const terse_blocks_t *b, char *buf,
                          const char *own_src, const int *ready, const int *busy)
{
    int n = b->n, r = req->comm->rank;
    int right = (r + 1) % n, left = (r + n - 1) % n;
    int total = b->cbase[n];
    int *recv_op = malloc(sizeof(int) * (size_t)(total ? total : 1));
    if (!recv_op)
        return -1;
    /* Step t: forward block r-t (own block first), receive block r-t-1. */
    for (int t = 0; t <= n - 2; t++) {
        int sb = (r - t + n) % n, rb = (r - t - 1 + n) % n;
        for (int c = 0; c < terse__blocks_nchunks(b, sb); c++) {
            size_t o = (size_t)c * b->chunk;
            int dep = t == 0 ? (ready ? ready[c] : -1) : recv_op[b->cbase[sb] + c];
            const char *src = t == 0 ? own_src + o : buf + b->off[sb] + o;
            if (terse__sched_add(req, TERSE_OPK_SEND, TERSE_ACT_NONE, right, NULL, src,
                                 terse__chunk_len(b, sb, c), dep, -1) < 0)
                goto oom;
        }
        for (int c = 0; c < terse__blocks_nchunks(b, rb); c++) {
            int g = b->cbase[rb] + c;
            int op = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, left, NULL, NULL,
                                      terse__chunk_len(b, rb, c), busy ? busy[g] : -1, -1);
            if (op < 0)
                goto oom;
            req->ops[op].dst = buf + b->off[rb] + (size_t)c * b->chunk;
            recv_op[g] = op;
        }
    }
    free(recv_op);
    return 0;
oom:
    free(recv_op);
    return -1;
}
