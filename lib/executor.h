/*
 * executor.h - runs the schedules of every communicator of a context over
 * its channels: issues chunk sends when their dependencies are met and the
 * peer has a free slot, consumes arrived slots into user memory, runs local
 * steps, and detects mismatches, dead peers and timeouts.
 *
 * Ordering rules that make this deadlock-free and mismatch-detectable:
 *  - sends to a peer go out in schedule order and, within one communicator,
 *    requests in start order; communicators do not wait for each other;
 *  - chunks from a peer are consumed in arrival order per communicator,
 *    matched by (communicator id, sequence number) to a request and by
 *    position to that request's next receive. A chunk that cannot be
 *    consumed yet while another communicator's chunks wait behind it is
 *    moved out of its slot (bounded by TERSE_STASH_LIMIT), so one
 *    communicator never blocks another on a shared connection.
 */
#ifndef TERSE_EXECUTOR_H
#define TERSE_EXECUTOR_H

#include "schedule.h"

/* Queue a built request behind the context's active ones and make first
 * progress. On failure the request is released. */
terse_status_t terse__exec_submit(terse_request_t *req);

/* The same with the context lock held, from inside the executor's callbacks
 * too (it then makes no progress itself: the running pass does). */
terse_status_t terse__exec_submit_locked(terse_request_t *req);

/* Open a TERSE_ACT_GATE op of a queued request. Lock held. */
void terse__exec_open_gate(terse_request_t *req, int idx);

/* One round of progress on every active request of the context; blocks up to
 * timeout_ms in the transport when nothing can move. */
void terse__exec_progress(terse_ctx_t *ctx, int timeout_ms);

/* Latch an error on comm for the call with sequence number seq and every
 * later one (the first error's status and text are kept), fail those
 * requests and, when propagate is set, tell every member so that all of
 * them return it. culprit: the communicator rank blamed, -1 if none. */
void terse__exec_fail(terse_comm_t *comm, terse_status_t st, int culprit, uint32_t seq,
                      int propagate, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Cancel the pending requests of comm (it is being destroyed): their
 * queued writes are dropped and the requests freed. */
void terse__exec_cancel_comm(terse_comm_t *comm);

/* Cancel one queued request that has sent nothing the peers wait for (a
 * round prepared ahead that will not be used); it is freed. Lock held. */
void terse__exec_cancel(terse_request_t *req);

/* Apply the aborts that named comm before it was created here (a peer made
 * it first and failed in it). */
void terse__exec_replay_aborts(terse_comm_t *comm);

/* Drop, without reading, what a fenced peer left in its slots. */
void terse__exec_drop_peer(terse_ctx_t *ctx, int world_peer);

/* Receive-side placement (terse_tp_place_fn): a chunk that completes a COPY
 * receive goes straight to the user's buffer instead of a slot. */
#define TERSE_PLACED_MAGIC 0x504c4344u
void *terse__exec_place(void *arg, int peer, void *head, size_t head_len, size_t rest_len);

/* Transport event handler (NOTIFY, SEND_DONE, PEER_ERROR); arg is the context. */
void terse__exec_on_event(void *arg, const terse_tp_event_t *ev);

#endif
