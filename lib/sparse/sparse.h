/*
 * sparse.h - sparse allgather, top-k selection and SASG (internal).
 *
 * One call of a sparse collective is an all-to-all of one message per rank
 * (each rank sends its own message to every peer, so no rank forwards data
 * of unknown size): header, then the indices delta- and varint-coded, then
 * the values; or the dense vector; or nothing but the header (a SASG skip,
 * or a poisoned message standing for invalid input). The executor's VARLEN
 * receives take the size from the first chunk's header.
 */
#ifndef TERSE_SPARSE_H
#define TERSE_SPARSE_H

#include "../comm.h"
#include "../codec/codec.h"

#include "../codec/topk_select.h"

enum { TERSE_SPMSG_LIST = 1, TERSE_SPMSG_DENSE, TERSE_SPMSG_SKIP, TERSE_SPMSG_POISON };

typedef struct terse_sparse_msg_hdr {
    uint32_t magic;
    uint8_t kind, vfmt;
    uint16_t pad;
    uint64_t k;         /* pairs (LIST) or values (DENSE) */
    uint64_t idx_bytes; /* LIST: bytes of the coded indices */
} terse_sparse_msg_hdr_t;

#define TERSE_SPARSE_MAGIC 0x53505253u /* "SPRS" */

/* One rank's decoded contribution. */
typedef struct terse_sparse_part {
    int kind;
    size_t k, icap, vcap;
    uint32_t *idx;
    float *val; /* DENSE: n values */
} terse_sparse_part_t;

struct terse_sparse {
    terse_comm_t *comm;
    int n, r;
    size_t len; /* vector length */
    terse_sparse_params_t p;
    uint64_t sig;
    terse_rng_t rng;

    unsigned char *msg; /* own message, registered: verbs sends it zero-copy */
    size_t msg_cap, msg_len;
    terse_memreg_t *msg_reg; /* NULL: sends bounce through the transport's buffers */
    int reg_warned;
    unsigned char **rbuf; /* per peer receive buffer */
    size_t *rcap, *rlen; /* capacity, length of the last message */
    terse_sparse_part_t *parts; /* per rank, decoded */
    uint32_t *sidx;             /* sorted copy of the input */
    float *sval;
    size_t sicap, svcap;

    /* allgather output */
    size_t *counts, *offsets;
    uint32_t *oidx;
    float *oval;
    size_t oicap, ovcap;

    uint64_t calls, bytes_sent, dense_sends;

    /* the exchange in flight, NULL when none */
    terse_request_t *inflight;
    int mode;                     /* what it ends with: SP_RAW, SP_GATHER, SP_REDUCE */
    terse_sparse_list_t *out_list;
    float *out_dense;
    terse_rng_t rng0;             /* put back if it fails */
    uint64_t dense0, sent_bytes;
    /* run last when the exchange ends (SASG's step), with its status */
    terse_status_t (*then)(void *arg, terse_status_t st);
    void *then_arg;
};

enum { TERSE_SP_RAW = 0, TERSE_SP_GATHER, TERSE_SP_REDUCE };

/*
 * One exchange: encode (kind, idx, val, k) - LIST, DENSE (val holds len
 * values), SKIP - or a POISON when the input breaks the rules, send it to
 * every peer, receive and decode everyone's message into parts[]. `purpose`
 * goes into the signature (allgather, allreduce, SASG). Returns
 * TERSE_ERR_INVALID_ARG on every rank when any rank's input was poisoned.
 * dense_ok: the sender may switch a LIST to DENSE when that is smaller.
 */
terse_status_t terse__sparse_exchange(terse_sparse_t *s, uint64_t purpose, int kind, const uint32_t *idx,
                                      const float *val, size_t k, int dense_ok);
/* The same, non-blocking when out != NULL; mode says what the end produces
 * (parts only, the allgather list, the accumulated vector). */
terse_status_t terse__sparse_exchange_start(terse_sparse_t *s, uint64_t purpose, int kind, const uint32_t *idx,
                                            const float *val, size_t k, int dense_ok, int mode,
                                            terse_request_t **out);

/* Decode rank r's message (len bytes at m) into parts[r]: 0, or -1 when it is
 * malformed (any bytes: a peer's message is checked before it is used). */
int terse__sparse_decode(terse_sparse_t *s, int r, const unsigned char *m, size_t len);

/* out[0..len) = sum of the decoded parts in rank order (skips add nothing). */
void terse__sparse_accumulate(const terse_sparse_t *s, float *out);

#endif
