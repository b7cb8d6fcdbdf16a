/* testutil.h - helpers for rank bodies: checks that report and fail. */
#ifndef TERSE_TESTUTIL_H
#define TERSE_TESTUTIL_H

#include "launcher.h"
#include "terse.h"

#include <stdio.h>
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

#endif
