/* comm.h - the communicator object and its per-peer channels (internal). */
#ifndef TERSE_COMM_H
#define TERSE_COMM_H

#include "terse_config.h"
#include "terse.h"
#include "../transports/transport.h"

#include <stdint.h>

/* Immediate data of a write: 3 type bits, then a 29-bit payload. */
#define TERSE_IMM_DATA 0u      /* [15:0] slot index */
#define TERSE_IMM_CREDIT 1u    /* slots freed */
#define TERSE_IMM_ABORT_SEQ 2u /* first call that fails (low 29 bits); precedes ABORT */
#define TERSE_IMM_ABORT 3u     /* [28:8] culprit rank (all ones: none), [7:0] -status */
#define TERSE_IMM_BYE 4u       /* peer is destroying its communicator */
#define TERSE_IMM_VAL_BITS 29
#define TERSE_IMM_VAL_MASK ((1u << TERSE_IMM_VAL_BITS) - 1)
#define TERSE_IMM(type, val) (((uint32_t)(type) << TERSE_IMM_VAL_BITS) | ((uint32_t)(val) & TERSE_IMM_VAL_MASK))
#define TERSE_IMM_TYPE(imm) ((imm) >> TERSE_IMM_VAL_BITS)
#define TERSE_IMM_VAL(imm) ((imm) & TERSE_IMM_VAL_MASK)
#define TERSE_CULPRIT_NONE 0x1fffffu

#define TERSE_WIRE_MAGIC 0x54525345u /* "TRSE" */
#define TERSE_HDR_SIZE 64

/* Header at the start of every receive slot; it lets the receiver detect
 * mismatched collectives and malformed data before it touches user memory. */
typedef struct terse_wire_hdr {
    uint32_t magic;
    uint32_t seq;    /* collective sequence number on the communicator */
    uint64_t sig;    /* hash of everything that must agree across ranks */
    uint32_t stream; /* index of this chunk among the request's chunks to this peer */
    uint32_t bytes;  /* payload bytes that follow the header */
    int32_t src;     /* sender rank */
    uint8_t coll, dtype, op, pad;
    int32_t root;
    uint32_t placed; /* receiver-local: the payload was placed in user memory */
    uint64_t count;  /* for error messages */
    uint64_t total;  /* variable-length messages: the whole message's bytes */
} terse_wire_hdr_t;

typedef struct terse_chan {
    uint64_t sent, credited;     /* slots written to the peer / freed by it */
    uint64_t arrived, consumed;  /* slots landed here / processed */
    uint32_t credits_owed;       /* freed slots not yet reported */
    int bye;                     /* peer is shutting down cleanly */
    int lost;                    /* connection gone */
    uint32_t abort_seq;          /* from the peer's last ABORT_SEQ */
} terse_chan_t;

typedef struct terse_request terse_request_t;

struct terse_comm {
    int rank, size;
    terse_config_t cfg;
    uint64_t secret_hash;
    const terse_tp_ops_t *tp_ops;
    terse_tp_t *tp;

    size_t chunk;        /* payload bytes per slot */
    int nslots;          /* slots per peer */
    size_t slot_stride;  /* header + payload */
    char *recv_region;   /* size * nslots slots, indexed by sender */
    size_t recv_len;
    terse_tp_mr_t *recv_mr;
    char *hdr_region;    /* send headers: size * nslots */
    terse_tp_mr_t *hdr_mr;
    char *rkeys;         /* size * TERSE_TP_RKEY_MAX: peers' receive regions */
    terse_chan_t *chans;

    terse_comm_stats_t stats;
    struct terse_memreg *regs; /* user and cached registrations */
    int reg_auto;              /* cached (automatic) entries */
    uint64_t reg_clock;

    terse_request_t *req_head, *req_tail;
    uint32_t next_seq;
    double last_activity;

    /* Sticky error: calls with seq >= error_seq fail (and every later call);
     * earlier calls still in flight finish normally when they can. */
    terse_status_t error;
    uint32_t error_seq;
    char error_detail[320];
};

/* Latch an error for the call with sequence number seq and every later one
 * (the first error's status and text are kept), fail those requests and,
 * when propagate is set, tell every peer so that all ranks return it. */
void terse__comm_fail(terse_comm_t *comm, terse_status_t st, int culprit, uint32_t seq,
                      int propagate, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* seq a comes at or after seq b (29-bit wrap-around on the wire is handled by callers). */
static inline int terse__seq_ge(uint32_t a, uint32_t b) { return (int32_t)(a - b) >= 0; }

#endif
