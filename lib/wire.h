/* wire.h - what travels between ranks (internal): the immediates of the
 * notifications and the header at the start of every receive slot. */
#ifndef TERSE_WIRE_H
#define TERSE_WIRE_H

#include <stdint.h>

/* Immediate data of a write: 3 type bits, then a 29-bit payload. */
#define TERSE_IMM_DATA 0u         /* [15:0] slot index */
#define TERSE_IMM_CREDIT 1u       /* slots freed */
#define TERSE_IMM_ABORT_SEQ 2u    /* first call that fails (low 29 bits); precedes ABORT */
#define TERSE_IMM_ABORT 3u        /* [28:8] culprit world rank (all ones: none), [7:0] -status */
#define TERSE_IMM_BYE 4u          /* peer is closing its context */
#define TERSE_IMM_ABORT_COMM_HI 5u /* communicator of the next ABORT: id bits 57..29 */
#define TERSE_IMM_ABORT_COMM_LO 6u /* ... id bits 28..0 */
#define TERSE_IMM_VAL_BITS 29
#define TERSE_IMM_VAL_MASK ((1u << TERSE_IMM_VAL_BITS) - 1)
#define TERSE_IMM(type, val) (((uint32_t)(type) << TERSE_IMM_VAL_BITS) | ((uint32_t)(val) & TERSE_IMM_VAL_MASK))
#define TERSE_IMM_TYPE(imm) ((imm) >> TERSE_IMM_VAL_BITS)
#define TERSE_IMM_VAL(imm) ((imm) & TERSE_IMM_VAL_MASK)
#define TERSE_CULPRIT_NONE 0x1fffffu

/* Communicator ids fit two immediates. */
#define TERSE_COMM_ID_BITS 58
#define TERSE_COMM_ID_MASK ((1ull << TERSE_COMM_ID_BITS) - 1)

#define TERSE_WIRE_MAGIC 0x54525345u /* "TRSE" */
#define TERSE_HDR_SIZE 64

/* Header at the start of every receive slot; it lets the receiver detect
 * mismatched collectives and malformed data before it touches user memory,
 * and tells apart the communicators that share a connection. */
typedef struct terse_wire_hdr {
    uint32_t magic;
    uint32_t seq;    /* collective sequence number on the communicator */
    uint64_t sig;    /* hash of everything that must agree across ranks */
    uint32_t stream; /* index of this chunk among the request's chunks to this peer */
    uint32_t bytes;  /* payload bytes that follow the header */
    int32_t src;     /* sender's world rank */
    uint8_t coll, dtype, op, pad;
    int32_t root;
    uint32_t placed; /* receiver-local: the payload was placed in user memory */
    uint64_t count;  /* for error messages */
    uint64_t total;  /* variable-length messages: the whole message's bytes */
    uint64_t comm;   /* communicator id */
} terse_wire_hdr_t;

_Static_assert(sizeof(terse_wire_hdr_t) == TERSE_HDR_SIZE, "wire header is one 64-byte line");

#endif
