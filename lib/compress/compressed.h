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
    float *se, *se_next; /* server residual and its next value (own chunk) */
    float *acc;          /* the owned chunk's sum */
    const float *u;      /* this step's input (set by the algorithm) */

    terse_rng_t rng_up, rng_down;
    uint64_t steps, error_averages, bytes_total, bytes_last;

    terse_memreg_t *regs[3];

    /* The step in flight (compressed_step.c), NULL when none. */
    terse_request_t *inflight;
    float *out;            /* its recvbuf */
    terse_rng_t rng_up0, rng_down0; /* the streams before it: put back if it fails */
    int bad_sum;           /* a contribution to our chunk (or a ring hop) was poison */
    int averaging;         /* it ends with the residual average */
    uint64_t step_bytes;   /* what it sends */
};

/* A step as one request (compressed_step.c): out NULL runs it to the end;
 * the state is committed when it succeeds, left as it was when it fails. */
terse_status_t terse__compressed_start(terse_compressed_t *c, const float *sendbuf, float *recvbuf,
                                       terse_request_t **out);

/* code = C(u + e_in); with e_out, e_out = (u + e_in) - decode(code) (feedback;
 * e_in may be NULL). One fused pass when the codec has encode_ef. */
terse_status_t terse__compressed_encode(terse_compressed_t *c, const terse_codec_ops_t *codec,
                                        const float *u, const float *e_in, float *e_out, size_t n,
                                        void *code, size_t *len, terse_rng_t *rng);
/* out = decode(code), overwriting out. */
terse_status_t terse__compressed_decode(terse_compressed_t *c, const terse_codec_ops_t *codec,
                                        const void *code, size_t len, float *out, size_t n);
/* Owner side: s holds the chunk's sum; scale it for AVG, encode it (with the
 * server residual) into the downlink slot, new residual into se_next. */
terse_status_t terse__compressed_owner(terse_compressed_t *c, float *s);
/* random-k positions of this step and chunk (-1: the whole tensor), the same on every rank */
void terse__compressed_set_seed(terse_compressed_t *c, int chunk);
/* Report a malformed code from `peer` on every rank. */
terse_status_t terse__compressed_bad_code(terse_compressed_t *c, int peer, const char *what);

#endif
