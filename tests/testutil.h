/* testutil.h - helpers for rank bodies: checks that report and fail. */
#ifndef TERSE_TESTUTIL_H
#define TERSE_TESTUTIL_H

#include "launcher.h"
#include "terse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Inside a rank body: print why and return failure. */
#define RCHECK(ctx, cond, ...)                                                        \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "rank %d: FAILED %s:%d: %s: ", (ctx)->rank, __FILE__,    \
                    __LINE__, #cond);                                                 \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

/* Create a communicator for a launched rank. */
static inline terse_status_t test_comm(const terse_launch_ctx_t *ctx, double timeout,
                                       terse_comm_t **comm)
{
    terse_comm_params_t p = {.rank = ctx->rank, .size = ctx->size, .root_addr = ctx->root,
                             .secret = ctx->secret, .timeout_sec = timeout};
    return terse_comm_create(&p, comm);
}

/* Create a communicator over a named transport (timeout 60 s). */
static inline terse_status_t test_comm_over(const terse_launch_ctx_t *ctx, const char *transport,
                                            terse_comm_t **comm)
{
    terse_comm_params_t p = {.rank = ctx->rank, .size = ctx->size, .root_addr = ctx->root,
                             .secret = ctx->secret, .transport = transport, .timeout_sec = 60};
    return terse_comm_create(&p, comm);
}

static inline uint64_t test_fnv(const void *p, size_t len)
{
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

/* All ranks hold the same bytes? (allgather of a hash, checked everywhere) */
static inline int test_same_everywhere(terse_comm_t *comm, const void *buf, size_t len)
{
    int n = terse_comm_size(comm);
    int64_t h = (int64_t)test_fnv(buf, len), *all = (int64_t *)malloc(sizeof(int64_t) * (size_t)n);
    int ok = all && terse_allgather(comm, &h, all, 1, TERSE_INT64) == TERSE_OK;
    for (int r = 0; ok && r < n; r++)
        ok = all[r] == h;
    free(all);
    return ok;
}

/* Run fn over every rank count of counts[0..nc); reports each failing rank.
 * Returns the number of rank counts that failed (cases skipped under an
 * external launcher of another size do not count). */
static inline int test_run_ranks(const char *name, const char *transport, terse_rank_fn fn,
                                 const int *counts, int nc, double timeout)
{
    int failed = 0;
    for (int i = 0; i < nc; i++) {
        int n = counts[i], codes[64];
        int rc = terse_launch(n, timeout, fn, NULL, codes);
        if (rc < 0)
            continue;
        for (int r = 0; r < n && r < 64; r++)
            if (codes[r] != 0)
                fprintf(stderr, "  %s, %d ranks over %s: rank %d exited with %d%s\n", name, n, transport, r,
                        codes[r], codes[r] == TERSE_LAUNCH_TIMEOUT ? " (timeout)" : "");
        failed += rc != 0;
    }
    return failed;
}

#endif
