/* coll.h - builders shared by the collective algorithms (internal). */
#ifndef TERSE_COLL_H
#define TERSE_COLL_H

#include "../dtype.h"
#include "../executor.h"

/* Validate common arguments; returns the sticky error if one is latched. */
terse_status_t terse__coll_check(const terse_comm_t *comm, terse_dtype_t dtype, int op, int need_op,
                                 const void *a, const void *b, size_t count);

/* Add an allreduce of count elements (req's dtype and op) to req, by the
 * algorithm terse_allreduce would choose (returned in *algo for the
 * signature). 0, or -1 when out of memory. */
int terse__allreduce_build(terse_request_t *req, const void *sendbuf, void *recvbuf, size_t count,
                           uint64_t *algo);

/* Commit req; block until done when out == NULL, else hand it to the caller. */
terse_status_t terse__coll_run(terse_request_t *req, terse_request_t **out);

/*
 * Non-power-of-two rank counts for recursive doubling and halving: the first
 * 2*rem ranks pair up, the even one hands its data to the odd one and sits
 * out (vr = -1); the other p2 = 2^floor(log2 n) ranks take part as virtual
 * ranks 0..p2-1.
 */
typedef struct terse_fold {
    int p2, rem, vr;
} terse_fold_t;

static inline terse_fold_t terse__fold(int n, int r)
{
    terse_fold_t f = {1, 0, 0};
    while (f.p2 * 2 <= n)
        f.p2 *= 2;
    f.rem = n - f.p2;
    f.vr = r < 2 * f.rem ? (r % 2 ? r / 2 : -1) : r - f.rem;
    return f;
}

/* Real rank of virtual rank vr. */
static inline int terse__fold_real(const terse_fold_t *f, int vr)
{
    return vr < f->rem ? 2 * vr + 1 : vr + f->rem;
}

/* Byte layout of n blocks: off[b], len[b] (multiples of the element size). */
typedef struct terse_blocks {
    int n;
    size_t *off, *len;
    int *cbase; /* first chunk index of each block; cbase[n] = total chunks */
    size_t chunk;
} terse_blocks_t;

/* Split count elements evenly into n blocks (earlier blocks take the remainder). */
int terse__blocks_even(terse_blocks_t *b, int n, size_t count, size_t esz, size_t chunk);
/* Blocks with given element counts and displacements (displs NULL: packed). */
int terse__blocks_v(terse_blocks_t *b, int n, const size_t *counts, const size_t *displs,
                    size_t esz, size_t chunk);
void terse__blocks_free(terse_blocks_t *b);
static inline int terse__blocks_nchunks(const terse_blocks_t *b, int blk)
{
    return b->cbase[blk + 1] - b->cbase[blk];
}
static inline size_t terse__chunk_len(const terse_blocks_t *b, int blk, int c)
{
    size_t rest = b->len[blk] - (size_t)c * b->chunk;
    return rest < b->chunk ? rest : b->chunk;
}

/*
 * Ring reduce-scatter: afterwards rank r holds the reduction of block r in
 * final_dst. in: every rank's input (n blocks); acc: scratch laid out like in
 * (may equal in). fin[chunk] receives the op index that finalises each chunk
 * of the own block; sent[] (total chunks) the op that sent each chunk (-1 if
 * none). Returns 0, or -1 when out of memory.
 */
int terse__ring_reduce_scatter(terse_request_t *req, const terse_blocks_t *b, const char *in,
                               char *acc, char *final_dst, int *fin, int *sent);

/*
 * Ring allgather: rank r's block is complete in buf when ops ready[c] are done
 * (ready NULL: already complete; src: where to send the own block from).
 * Every other block is received into buf. busy[] (total chunks, may be NULL):
 * ops that read a block's region and must finish before it is overwritten.
 */
int terse__ring_allgather(terse_request_t *req, const terse_blocks_t *b, char *buf,
                          const char *own_src, const int *ready, const int *busy);

/*
 * Allreduce of count elements in place in buf by recursive halving and
 * doubling (Rabenseifner). Returns 0, or -1 when out of memory.
 */
int terse__build_rabenseifner(terse_request_t *req, char *buf, size_t count, size_t esz);


/* Ring allgather of byte blocks (exchange.c), blocking: block i is
 * buf[off[i] .. off[i]+len[i]), the own block already in place; lengths must
 * agree on all ranks. `sig` folds in what the ranks must agree on; `step`
 * tells calls apart in error messages. */
terse_status_t terse__allgather_bytes(terse_comm_t *comm, uint64_t sig, uint64_t step, char *buf,
                                      const size_t *off, const size_t *len);

#endif
