/*
 * partial_round.c - the two rounds of a partial allreduce step (see
 * partial.h): the agreement on the contributor set and the exchange and sum
 * of its codes. Everything here runs with the context lock held, from the
 * caller's thread or whichever thread drives progress.
 */
#include "partial.h"
#include "../executor.h"
#include "../log.h"
#include "../net.h"
#include "../progress.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static size_t decision_bytes(const terse_partial_t *h)
{
    return sizeof(partial_decide_t) + sizeof(uint64_t) * (size_t)h->words;
}

static terse_partial_t *handle_of(terse_request_t *req) { return req->call_arg; }

static partial_slot_t *slot_of(terse_request_t *req)
{
    terse_partial_t *h = handle_of(req);
    return partial_slot(h, req->tag);
}

static void slot_end(partial_slot_t *s, terse_status_t st)
{
    if (s->done)
        return;
    s->status = st;
    s->done = 1;
}

static void fail_step(terse_partial_t *h, partial_slot_t *s, int culprit, const char *what)
{
    terse__exec_fail(h->comm, TERSE_ERR_PROTOCOL, culprit, s->r1 ? s->r1->seq : h->comm->next_seq, 1,
                     "partial allreduce step %llu: %s from rank %d", (unsigned long long)s->step, what, culprit);
}

/* ---- the sum ---------------------------------------------------------- */

static terse_status_t sum_codes(terse_partial_t *h, partial_slot_t *s)
{
    const partial_decide_t *d = (const partial_decide_t *)s->decision;
    const uint64_t *set = (const uint64_t *)(d + 1);
    memset(s->result, 0, sizeof(float) * h->count);
    if (h->gc) {
        /* fp32: one responder per group decodes exactly; lossy codes average */
        int flags = strcmp(h->codec->name, "fp32") ? TERSE_GC_AVERAGE : 0;
        terse_status_t st = terse_gc_decode_vector(h->gc, set, flags, h->coef);
        if (st != TERSE_OK)
            return st;
    }
    for (int m = 0; m < h->n; m++) {
        if (!partial_in(set, m) || (h->gc && h->coef[m] == 0))
            continue;
        const char *code = m == h->r ? h->code : s->codes + (size_t)m * h->bound;
        size_t len = m == h->r ? h->code_len : s->lens[m];
        terse_status_t st;
        if (!h->gc || h->coef[m] == 1.0) {
            st = h->codec->decode_add(&h->cp, code, len, s->result, h->count);
        } else {
            st = h->codec->decode ? h->codec->decode(&h->cp, code, len, h->tmp, h->count)
                                  : (memset(h->tmp, 0, sizeof(float) * h->count),
                                     h->codec->decode_add(&h->cp, code, len, h->tmp, h->count));
            float a = (float)h->coef[m];
            for (size_t i = 0; i < h->count && st == TERSE_OK; i++)
                s->result[i] += a * h->tmp[i];
        }
        if (st != TERSE_OK) {
            fail_step(h, s, m, "malformed code");
            return TERSE_ERR_PROTOCOL;
        }
    }
    if (h->p.op == TERSE_AVG) {
        float k = (float)(h->gc ? h->n : (int)d->ncontrib);
        if (k > 0)
            for (size_t i = 0; i < h->count; i++)
                s->result[i] /= k;
    }
    return TERSE_OK;
}

static terse_status_t r2_done(terse_request_t *req, void *arg, terse_status_t st)
{
    terse_partial_t *h = arg;
    partial_slot_t *s = partial_slot(h, req->tag);
    s->r2 = NULL;
    if (st == TERSE_OK)
        st = sum_codes(h, s);
    slot_end(s, st);
    return st;
}

static void *code_at(void *arg, int peer, uint64_t total)
{
    terse_request_t *req = arg;
    terse_partial_t *h = handle_of(req);
    partial_slot_t *s = slot_of(req);
    s->lens[peer] = (size_t)total;
    return s->codes + (size_t)peer * h->bound;
}

/* R2: the members send their codes to all; everyone hears every member. */
static terse_status_t submit_data(terse_partial_t *h, partial_slot_t *s)
{
    const uint64_t *set = (const uint64_t *)((partial_decide_t *)s->decision + 1);
    terse_request_t *req;
    terse_status_t st = terse__sched_new(h->comm, TERSE_COLL_PARTIAL, TERSE_FLOAT32, h->p.op, -1, h->count,
                                         h->sig ^ 0x5232u, &req);
    if (st != TERSE_OK)
        return st;
    int rc = 0, mine = partial_in(set, h->r);
    for (int q = 0; q < h->n && !rc; q++) {
        if (q == h->r)
            continue;
        if (mine) {
            rc = terse__sched_send_msg(req, q, h->code, h->code_len) < 0;
            s->bytes += h->code_len;
        }
        if (!rc && partial_in(set, q))
            rc = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_VARLEN, q, NULL, NULL, h->bound, -1, -1) < 0;
    }
    if (rc) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    req->call_arg = h;
    req->tag = s->step;
    req->varlen_alloc = code_at;
    req->varlen_arg = req;
    req->on_done = r2_done;
    req->freed_by_user = 1; /* nobody reaps it: freed when it ends */
    s->r2 = req;
    st = terse__exec_submit_locked(req);
    if (st != TERSE_OK)
        s->r2 = NULL;
    return st;
}

/* The decision of slot s is known here (made, or received): record it, then
 * R2 for the step and R1 for the next ones. Steps are decided in order. */
static void apply_decision(terse_partial_t *h, partial_slot_t *s)
{
    const partial_decide_t *d = (const partial_decide_t *)s->decision;
    const uint64_t *set = (const uint64_t *)(d + 1);
    s->decided = 1;
    h->comm->ctx->finished++; /* wakes a rank waiting for the decision */
    for (int i = 0; i < h->n; i++)
        h->stale[i] = partial_in(set, i) ? 0 : h->stale[i] + 1;
    memcpy(s->stale, h->stale, sizeof(uint32_t) * (size_t)h->n);
    h->partial_run = (int)d->ncontrib < h->n ? h->partial_run + 1 : 0;
    if (!s->opened) { /* the caller has not come: its ARRIVE says so */
        s->opened = 1;
        s->out.present = ARRIVE_NONE;
        if (s->r1)
            terse__exec_open_gate(s->r1, s->gate);
    }
    terse_status_t st = h->closing ? TERSE_ERR_INVALID_ARG : submit_data(h, s);
    if (st != TERSE_OK) {
        slot_end(s, st);
        return;
    }
    terse__partial_post(h);
}

/* ---- the coordinator's policy ----------------------------------------- */

static uint64_t initiator(const terse_partial_t *h, uint64_t step)
{
    return terse__mix64(terse__mix64(h->p.seed, 0x6d616aull), step) % (uint64_t)h->n;
}

static int policy_met(const terse_partial_t *h, const partial_slot_t *s, int forced)
{
    if (s->ncalled == h->n)
        return 1;
    if (forced)
        return 0;
    switch (h->p.policy) {
    case TERSE_PARTIAL_QUORUM:
        return s->ncontrib >= h->quorum;
    case TERSE_PARTIAL_DEADLINE:
        return s->ncontrib >= h->p.min_contributors && terse__now() >= s->t0 + h->p.deadline_sec;
    case TERSE_PARTIAL_SOLO:
        return s->ncontrib >= 1;
    case TERSE_PARTIAL_MAJORITY:
        return partial_in(s->called, (int)initiator(h, s->step));
    default:
        return 0;
    }
}

static void decide_if_met(terse_partial_t *h, partial_slot_t *s)
{
    if (s->decided || !s->r1)
        return;
    int forced = h->p.max_stale > 0 && h->partial_run >= h->p.max_stale;
    if (!policy_met(h, s, forced))
        return;
    partial_decide_t *d = (partial_decide_t *)s->decision;
    d->step = s->step;
    d->ncontrib = (uint32_t)s->ncontrib;
    d->forced = (uint32_t)forced;
    memcpy(d + 1, s->contrib, sizeof(uint64_t) * (size_t)h->words);
    terse__exec_open_gate(s->r1, s->gate);
    apply_decision(h, s);
}

static void on_wake(terse_request_t *req)
{
    decide_if_met(handle_of(req), slot_of(req));
}

/* An arrival at the coordinator (its own caller's or an ARRIVE). */
static void coord_arrival(terse_partial_t *h, partial_slot_t *s, int from, uint32_t present)
{
    if (present == ARRIVE_NONE || partial_in(s->called, from))
        return;
    if (!s->ncalled) {
        s->t0 = terse__now();
        s->r1->patient = 0; /* from now on a silent rank is one the step waits for */
        h->comm->last_progress = s->t0;
        if (h->p.policy == TERSE_PARTIAL_DEADLINE) {
            s->r1->wake_at = s->t0 + h->p.deadline_sec;
            s->r1->on_wake = on_wake;
        }
    }
    partial_add(s->called, from);
    s->ncalled++;
    if (present == ARRIVE_CODE && !s->decided) {
        partial_add(s->contrib, from);
        s->ncontrib++;
    }
    decide_if_met(h, s);
}

/* ---- R1 --------------------------------------------------------------- */

static void r1_recv(terse_request_t *req, int peer, int idx)
{
    (void)idx;
    terse_partial_t *h = handle_of(req);
    partial_slot_t *s = slot_of(req);
    if (h->r == PARTIAL_COORD) {
        const partial_arrive_t *a = &s->in[peer];
        if (a->step != s->step || a->present > ARRIVE_EMPTY)
            fail_step(h, s, peer, "malformed arrival");
        else
            coord_arrival(h, s, peer, a->present);
        return;
    }
    const partial_decide_t *d = (const partial_decide_t *)s->decision;
    const uint64_t *set = (const uint64_t *)(d + 1);
    int count = 0;
    for (int i = 0; i < h->n; i++)
        count += partial_in(set, i);
    if (d->step != s->step || (int)d->ncontrib != count || d->forced > 1 ||
        (h->n % 64 && set[h->words - 1] >> (h->n % 64))) {
        fail_step(h, s, peer, "malformed decision");
        return;
    }
    apply_decision(h, s);
}

static terse_status_t r1_done(terse_request_t *req, void *arg, terse_status_t st)
{
    terse_partial_t *h = arg;
    partial_slot_t *s = partial_slot(h, req->tag);
    s->r1 = NULL;
    s->r1_ended = 1;
    if (st != TERSE_OK)
        slot_end(s, st);
    else
        terse__partial_post(h); /* the slot's agreement buffers are free */
    return st;
}

static terse_status_t submit_agreement(terse_partial_t *h, partial_slot_t *s)
{
    terse_request_t *req;
    terse_status_t st = terse__sched_new(h->comm, TERSE_COLL_PARTIAL, TERSE_FLOAT32, h->p.op, PARTIAL_COORD,
                                         h->count, h->sig, &req);
    if (st != TERSE_OK)
        return st;
    int rc = 0;
    size_t db = decision_bytes(h);
    if (h->r == PARTIAL_COORD) {
        for (int q = 0; q < h->n && !rc; q++)
            if (q != h->r)
                rc = terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, q, &s->in[q], NULL,
                                      sizeof(partial_arrive_t), -1, -1) < 0;
        s->gate = rc ? -1 : terse__sched_add(req, TERSE_OPK_LOCAL, TERSE_ACT_GATE, -1, NULL, NULL, 0, -1, -1);
        for (int q = 0; q < h->n && s->gate >= 0 && !rc; q++)
            if (q != h->r)
                rc = terse__sched_add(req, TERSE_OPK_SEND, TERSE_ACT_NONE, q, NULL, s->decision, db, s->gate, -1) < 0;
    } else {
        s->gate = terse__sched_add(req, TERSE_OPK_LOCAL, TERSE_ACT_GATE, -1, NULL, NULL, 0, -1, -1);
        rc = s->gate < 0 ||
             terse__sched_add(req, TERSE_OPK_SEND, TERSE_ACT_NONE, PARTIAL_COORD, NULL, &s->out,
                              sizeof(partial_arrive_t), s->gate, -1) < 0 ||
             terse__sched_add(req, TERSE_OPK_RECV, TERSE_ACT_COPY, PARTIAL_COORD, s->decision, NULL, db, -1, -1) < 0;
    }
    if (rc || s->gate < 0) {
        terse__sched_free(req);
        return TERSE_ERR_NO_MEMORY;
    }
    req->call_arg = h;
    req->tag = s->step;
    req->on_recv = r1_recv;
    req->on_done = r1_done;
    req->patient = 1; /* until someone arrives: the callers may compute for long */
    req->freed_by_user = 1;
    s->r1 = req;
    st = terse__exec_submit_locked(req);
    if (st != TERSE_OK)
        s->r1 = NULL;
    return st;
}

void terse__partial_post(terse_partial_t *h)
{
    while (!h->closing && h->posted < h->consumed + (uint64_t)h->lookahead) {
        if (h->posted > 0 && !partial_slot(h, h->posted - 1)->decided)
            return; /* R1_t+1 goes after R2_t, on every rank */
        partial_slot_t *s = partial_slot(h, h->posted);
        if (s->r1 || s->r2)
            return; /* the slot's last step is still finishing */
        uint64_t step = h->posted++;
        s->step = step;
        s->opened = s->decided = s->done = s->r1_ended = 0;
        s->status = TERSE_IN_PROGRESS;
        s->ncalled = s->ncontrib = 0;
        s->bytes = 0;
        s->out = (partial_arrive_t){step, ARRIVE_NONE, 0};
        memset(s->called, 0, sizeof(uint64_t) * (size_t)h->words);
        memset(s->contrib, 0, sizeof(uint64_t) * (size_t)h->words);
        memset(s->decision, 0, decision_bytes(h));
        terse_status_t st = submit_agreement(h, s);
        s->armed = 1;
        if (st != TERSE_OK) {
            slot_end(s, st);
            return;
        }
    }
}

void terse__partial_arrive(terse_partial_t *h, partial_slot_t *s, uint32_t present)
{
    s->opened = 1;
    s->out.present = present;
    if (h->r == PARTIAL_COORD) {
        coord_arrival(h, s, h->r, present);
        return;
    }
    s->r1->patient = 0;
    h->comm->last_progress = terse__now();
    terse__exec_open_gate(s->r1, s->gate);
}
