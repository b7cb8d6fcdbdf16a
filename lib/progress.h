/* progress.h - who drives a context's executor, and the lock that lets a
 * progress thread and the caller's thread share it.
 *
 * Without a progress thread the caller's thread drives everything from
 * start/test/wait; the lock is then never contended. With one
 * (TERSE_PROGRESS_THREAD=1 or terse_comm_params_t.progress_thread), that
 * thread drives the executor whenever requests are in flight and blocks in
 * the transport between events; a caller that wants the context wakes it
 * through an eventfd the transport polls too, so it never waits out a
 * blocking poll. The executor and transport run under the lock only:
 * one thread at a time, as before. */
#ifndef TERSE_PROGRESS_H
#define TERSE_PROGRESS_H

#include "context.h"

/* Set up the lock (and, for a thread, its wake-up eventfd: the transport
 * polls ctx->wake_fd too). */
terse_status_t terse__progress_init(terse_ctx_t *ctx, int thread);
/* Start the thread asked for at init, once the context is connected. */
terse_status_t terse__progress_start(terse_ctx_t *ctx);
/* Stop and join the thread; destroy the lock. Call with the lock not held. */
void terse__progress_fini(terse_ctx_t *ctx);

/* Take / drop the context (recursive: the executor's callbacks may call in). */
void terse__ctx_lock(terse_ctx_t *ctx);
void terse__ctx_unlock(terse_ctx_t *ctx);

/* New work was queued: wake an idle progress thread. Lock held. */
void terse__progress_kick(terse_ctx_t *ctx);

/* Block until *done is set (by request completion), driving progress
 * ourselves or, with the thread, sleeping until it reports. Lock held once. */
void terse__progress_until(terse_ctx_t *ctx, const int *done);

/* The same, giving up at deadline (terse__now() clock); returns *done. */
int terse__progress_until_time(terse_ctx_t *ctx, const int *done, double deadline);

/* A pointer the progress thread may clear (a handle's step in flight), read
 * under the lock. */
void *terse__ctx_read_ptr(terse_ctx_t *ctx, void *const *p);

#define INFLIGHT(h) ((terse_request_t *)terse__ctx_read_ptr((h)->comm->ctx, (void *const *)&(h)->inflight))

/* Let the request a handle has in flight end (destroying the handle). */
void terse__ctx_settle(terse_ctx_t *ctx, terse_request_t **inflight);

#endif
