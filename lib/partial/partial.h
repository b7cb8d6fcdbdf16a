/*
 * partial.h - the partial (straggler-tolerant) allreduce (internal layout).
 *
 * A step is two requests on the handle's own communicator, submitted in the
 * same order on every rank: R1_t, R2_t, R1_t+1, R2_t+1, ...
 *  R1 (agreement): every rank but the coordinator (rank 0) sends it one
 *     ARRIVE once its caller contributed - or, if the decision came first,
 *     an empty one - and receives the DECISION (the set). The coordinator
 *     applies the policy to the arrivals in the order they land (on_recv
 *     hook, its own caller, a timer for DEADLINE) and opens the gate that
 *     sends the decision.
 *  R2 (data), built when the decision is known: the members send their
 *     codes to everyone; everyone sums the members' decoded codes in rank
 *     order (times the decoding vector with gradient coding).
 * R1 is submitted before the caller arrives (up to `lookahead` steps
 * ahead), so with a progress thread a slow rank's context answers for it
 * while it computes.
 */
#ifndef TERSE_PARTIAL_H
#define TERSE_PARTIAL_H

#include "../comm.h"
#include "../codec/codec.h"

#define TERSE_PARTIAL_MAX_LOOKAHEAD 8
#define PARTIAL_COORD 0

/* ARRIVE.present: */
enum { ARRIVE_NONE = 0, ARRIVE_CODE = 1, ARRIVE_EMPTY = 2 };

typedef struct {
    uint64_t step;
    uint32_t present, pad;
} partial_arrive_t;

/* DECISION: this header, then the set (words uint64_t). */
typedef struct {
    uint64_t step;
    uint32_t ncontrib, forced;
} partial_decide_t;

typedef struct partial_slot {
    uint64_t step;
    terse_request_t *r1, *r2;
    int r1_ended;         /* R1 is over (its sends are out) */
    int armed;            /* holds `step`, R1 submitted; cleared when the caller had it */
    int gate;             /* R1's gate: the arrival (members) or the decision (coordinator) */
    int opened;           /* this rank's arrival was made (or the decision came first) */
    int decided, done;
    terse_status_t status;
    partial_arrive_t out; /* this rank's ARRIVE */
    /* coordinator: arrivals seen */
    partial_arrive_t *in; /* [n] */
    uint64_t *called, *contrib; /* bitmaps */
    int ncalled, ncontrib;
    double t0;            /* first arrival */
    char *decision;       /* partial_decide_t + set */
    /* data */
    char *codes;          /* [n] * bound: the members' codes */
    size_t *lens;         /* [n] */
    float *result;        /* [count] */
    uint32_t *stale;      /* [n] after this step */
    uint64_t bytes;
} partial_slot_t;

struct terse_partial {
    terse_comm_t *comm; /* the handle's own (a dup of the caller's) */
    int n, r, words;
    size_t count;
    terse_partial_params_t p;
    char codec_name[32];
    const terse_codec_ops_t *codec;
    terse_codec_params_t cp;
    size_t bound;
    int ef, lookahead, quorum;
    int closing;        /* being destroyed: the callbacks start nothing new */
    terse_gc_t *gc;
    double *coef;       /* [n] decoding vector of the step being summed */
    uint64_t sig;
    terse_rng_t rng;

    float *e, *e_next;  /* residual, and its value if this step's code is used */
    char *code;         /* this rank's code of the step it is in */
    size_t code_len;
    float *tmp;         /* a decoded code */

    uint64_t consumed;  /* steps returned to the caller */
    uint64_t posted;    /* R1 submitted for steps < posted */
    uint32_t *stale;    /* [n] after the last decided step */
    int partial_run;    /* partial steps in a row up to it */
    partial_slot_t slot[TERSE_PARTIAL_MAX_LOOKAHEAD];
};

static inline partial_slot_t *partial_slot(terse_partial_t *h, uint64_t step)
{
    return &h->slot[step % (uint64_t)h->lookahead];
}

static inline int partial_in(const uint64_t *set, int r) { return (int)((set[r / 64] >> (r % 64)) & 1u); }
static inline void partial_add(uint64_t *set, int r) { set[r / 64] |= 1ull << (r % 64); }

/* partial_round.c: submit R1 for every step the window allows (lock held). */
void terse__partial_post(terse_partial_t *h);
/* The caller of this rank arrives at slot s (lock held): present is
 * ARRIVE_CODE (h->code holds its code) or ARRIVE_EMPTY. */
void terse__partial_arrive(terse_partial_t *h, partial_slot_t *s, uint32_t present);

#endif
