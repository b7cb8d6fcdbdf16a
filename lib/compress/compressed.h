/*
 * compressed.h - the persistent compressed allreduce (internal layout).
 *
 * One handle per tensor or bucket. Chunk j of the tensor (an even split) is
 * owned by rank j in the two-phase and ring algorithms. Buffers that go on
 * the wire are allocated once, 64-byte aligned per code, and registered with
 * the communicator so verbs writes them zero-copy.
 */
#ifndef TERSE_COMPRESSED_H
#define TERSE_COMPRESSED_H

#include "../comm.h"
#include "../codec/codec.h"

#define TERSE_CODE_ALIGN 64

struct terse_compressed {
    terse_comm_t *comm;
    int n, r;
    size_t count;
    terse_compressed_params_t p;
    char codec_name[32], server_codec_name[32];
    const terse_codec_ops_t *up, *down; /* worker codec, owner (downlink) codec */
    terse_codec_params_t cp;
    terse_compressed_algo_t algo;
    uint64_t sig; /* hash of everything the ranks must agree on */

    size_t *off, *len; /* chunk j: elements [off[j], off[j] + len[j]) */

    /* Uplink codes this rank sends: one code of the whole tensor (allgather,
     * slot i of `gather` is rank i's code) or one code per chunk (two-phase). */
    char *up_codes;
    size_t *up_off, *up_len;
    /* Codes received: allgather - every rank's whole-tensor code;
     * two-phase - every rank's code of our chunk; ring - one hop's code. */
    char *in_codes;
    size_t *in_off, *in_len;
    /* Downlink: each owner's code of its chunk, allgathered. */
    char *down_codes;
    size_t *down_off, *down_len;

    float *e, *e_next;   /* worker residual (count); e_next doubles as p = u + e */
    float *se, *se_next; /* server residual and scratch (own chunk) */

    terse_rng_t rng_up, rng_down;
    uint64_t steps, error_averages, bytes_total, bytes_last;
    double residual_norm, server_residual_norm;

    terse_memreg_t *regs[3];
};

/* Algorithms (compressed_algo.c). Each fills recvbuf and c->e_next /
 * c->se_next; the caller commits the state only when they succeed. */
terse_status_t terse__compressed_allgather(terse_compressed_t *c, float *recvbuf);
terse_status_t terse__compressed_two_phase(terse_compressed_t *c, float *recvbuf);
terse_status_t terse__compressed_ring(terse_compressed_t *c, float *recvbuf);

/* Worker side of a chunk: code = C(p[0..n)); when feedback is on, p becomes
 * the new residual p - decode(code) in place. */
terse_status_t terse__compressed_encode_fb(terse_compressed_t *c, const terse_codec_ops_t *codec,
                                           float *p, size_t n, void *code, size_t *len,
                                           terse_rng_t *rng, int feedback);
/* Owner side: s holds the chunk's sum; scale it for AVG, add the server
 * residual, encode into the downlink slot, update se_next. */
terse_status_t terse__compressed_owner(terse_compressed_t *c, float *s);
/* random-k positions of this step and chunk (-1: the whole tensor), the same on every rank */
void terse__compressed_set_seed(terse_compressed_t *c, int chunk);
/* Report a malformed code from `peer` on every rank. */
terse_status_t terse__compressed_bad_code(terse_compressed_t *c, int peer, const char *what);

#endif
