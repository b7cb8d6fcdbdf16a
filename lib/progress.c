/* progress.c - the context lock and the optional progress thread. */
#include "progress.h"
#include "executor.h"
#include "log.h"
#include "net.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static void drain_wake(terse_ctx_t *ctx)
{
    uint64_t v;
    while (read(ctx->wake_fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
        ;
}

/* Requests ended (or steps were decided) in the last pass: wake the
 * callers sleeping in terse__progress_until_time. */
static void wake_sleepers(terse_ctx_t *ctx)
{
    pthread_mutex_lock(&ctx->sleep_lock);
    ctx->wake_gen++;
    pthread_cond_broadcast(&ctx->sleep_cv);
    pthread_mutex_unlock(&ctx->sleep_lock);
}

static void *progress_main(void *arg)
{
    terse_ctx_t *ctx = arg;
    pthread_mutex_lock(&ctx->lock);
    while (!ctx->stop) {
        if (!ctx->req_head) {
            if (ctx->sleepers)
                wake_sleepers(ctx);
            pthread_cond_wait(&ctx->work_cv, &ctx->lock);
            continue;
        }
        uint64_t finished = ctx->finished;
        terse__exec_progress(ctx, 100);
        drain_wake(ctx);
        if (ctx->sleepers && ctx->finished != finished)
            wake_sleepers(ctx);
        /* a caller woke us to get in: let it, before blocking again */
        while (atomic_load(&ctx->waiters) > 0 && !ctx->stop)
            pthread_cond_wait(&ctx->handoff_cv, &ctx->lock);
    }
    pthread_mutex_unlock(&ctx->lock);
    return NULL;
}

terse_status_t terse__progress_init(terse_ctx_t *ctx, int thread)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&ctx->lock, &a);
    pthread_mutexattr_destroy(&a);
    pthread_cond_init(&ctx->work_cv, NULL);
    pthread_mutex_init(&ctx->sleep_lock, NULL);
    pthread_cond_init(&ctx->sleep_cv, NULL);
    pthread_cond_init(&ctx->handoff_cv, NULL);
    atomic_init(&ctx->waiters, 0);
    ctx->wake_fd = -1;
    ctx->lock_ready = 1;
    if (!thread)
        return TERSE_OK;
    ctx->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ctx->wake_fd < 0) {
        TERSE_WARN(INIT, "progress thread: eventfd: %s", strerror(errno));
        return TERSE_ERR_SYSTEM;
    }
    return TERSE_OK;
}

terse_status_t terse__progress_start(terse_ctx_t *ctx)
{
    if (ctx->wake_fd < 0 || ctx->thread_on)
        return TERSE_OK;
    int rc = pthread_create(&ctx->thread, NULL, progress_main, ctx);
    if (rc != 0) {
        TERSE_WARN(INIT, "progress thread: pthread_create: %s", strerror(rc));
        return TERSE_ERR_SYSTEM;
    }
    ctx->thread_on = 1;
    TERSE_INFO(INIT, "rank %d: progress thread started", ctx->rank);
    return TERSE_OK;
}

void terse__progress_fini(terse_ctx_t *ctx)
{
    if (!ctx->lock_ready)
        return;
    if (ctx->thread_on) {
        pthread_mutex_lock(&ctx->lock);
        ctx->stop = 1;
        pthread_cond_signal(&ctx->work_cv);
        pthread_cond_broadcast(&ctx->handoff_cv);
        uint64_t one = 1;
        (void)!write(ctx->wake_fd, &one, sizeof(one));
        pthread_mutex_unlock(&ctx->lock);
        pthread_join(ctx->thread, NULL);
        ctx->thread_on = 0;
    }
    if (ctx->wake_fd >= 0)
        close(ctx->wake_fd);
    ctx->wake_fd = -1;
    pthread_cond_destroy(&ctx->work_cv);
    pthread_cond_destroy(&ctx->sleep_cv);
    pthread_mutex_destroy(&ctx->sleep_lock);
    pthread_cond_destroy(&ctx->handoff_cv);
    pthread_mutex_destroy(&ctx->lock);
    ctx->lock_ready = 0;
}

void terse__ctx_lock(terse_ctx_t *ctx)
{
    if (pthread_mutex_trylock(&ctx->lock) == 0)
        return;
    if (!ctx->thread_on) { /* another caller thread: the contract's business */
        pthread_mutex_lock(&ctx->lock);
        return;
    }
    /* The progress thread may be asleep in the transport: wake it, then queue. */
    atomic_fetch_add(&ctx->waiters, 1);
    uint64_t one = 1;
    (void)!write(ctx->wake_fd, &one, sizeof(one));
    pthread_mutex_lock(&ctx->lock);
    atomic_fetch_sub(&ctx->waiters, 1);
    pthread_cond_signal(&ctx->handoff_cv);
}

void terse__ctx_unlock(terse_ctx_t *ctx) { pthread_mutex_unlock(&ctx->lock); }

void terse__progress_kick(terse_ctx_t *ctx)
{
    if (ctx->thread_on)
        pthread_cond_signal(&ctx->work_cv);
}

int terse__progress_until_time(terse_ctx_t *ctx, const int *done, double deadline)
{
    if (ctx->thread_on) {
        ctx->sleepers++;
        while (!*done && terse__now() < deadline) {
            pthread_mutex_lock(&ctx->sleep_lock);
            unsigned gen = ctx->wake_gen;
            pthread_mutex_unlock(&ctx->sleep_lock);
            pthread_cond_signal(&ctx->work_cv);
            pthread_mutex_unlock(&ctx->lock); /* held once: the thread may run */
            pthread_mutex_lock(&ctx->sleep_lock);
            /* 100 ms slices: a missed wake-up costs at most that */
            double until = fmin(deadline, terse__now() + 0.1);
            while (ctx->wake_gen == gen && terse__now() < until) {
                double left = until - terse__now();
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                long ns = ts.tv_nsec + (long)(left * 1e9) + 1;
                ts.tv_sec += ns / 1000000000L;
                ts.tv_nsec = ns % 1000000000L;
                pthread_cond_timedwait(&ctx->sleep_cv, &ctx->sleep_lock, &ts);
            }
            pthread_mutex_unlock(&ctx->sleep_lock);
            terse__ctx_lock(ctx);
        }
        ctx->sleepers--;
        return *done;
    }
    /* Poll briefly (yielding the core: ranks often outnumber cores), then
     * sleep in the transport between events; 100 ms slices keep the timeout
     * check responsive. */
    double spin_until = terse__now() + 1e-6 * ctx->cfg.spin_us;
    while (!*done) {
        double now = terse__now();
        if (now >= deadline)
            break;
        if (now < spin_until) {
            terse__exec_progress(ctx, 0);
            sched_yield();
        } else {
            double left = deadline - now;
            terse__exec_progress(ctx, left < 0.1 ? (int)(left * 1e3) + 1 : 100);
        }
    }
    return *done;
}

void terse__progress_until(terse_ctx_t *ctx, const int *done)
{
    terse__progress_until_time(ctx, done, INFINITY);
}

void *terse__ctx_read_ptr(terse_ctx_t *ctx, void *const *p)
{
    terse__ctx_lock(ctx);
    void *v = *p;
    terse__ctx_unlock(ctx);
    return v;
}

void terse__ctx_settle(terse_ctx_t *ctx, terse_request_t **inflight)
{
    terse__ctx_lock(ctx);
    if (*inflight) {
        terse__progress_until(ctx, &(*inflight)->done);
        (*inflight)->owner = NULL; /* the handle goes; the request stays the caller's */
        *inflight = NULL;
    }
    terse__ctx_unlock(ctx);
}
