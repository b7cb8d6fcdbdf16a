/* memreg.h - registered user memory: explicit registrations and the optional
 * automatic cache (TERSE_REG_CACHE), looked up when a chunk is sent. */
#ifndef TERSE_MEMREG_H
#define TERSE_MEMREG_H

#include "context.h"

struct terse_memreg {
    struct terse_memreg *next;
    char *base; /* page-aligned */
    size_t len;
    terse_tp_mr_t *mr;
    int automatic;     /* made by the cache, not by the caller */
    uint64_t last_use; /* for least-recently-used eviction */
};

/* Registration covering [ptr, ptr+len), or NULL. Counts a hit or a miss. */
terse_tp_mr_t *terse__memreg_find(terse_ctx_t *ctx, const void *ptr, size_t len);

/* With the cache on, make sure [buf, buf+len) is registered (large buffers
 * only); failures are not errors: the chunk then goes through a bounce slot. */
void terse__memreg_auto(terse_ctx_t *ctx, const void *buf, size_t len);

/* Release every registration (context teardown). */
void terse__memreg_clear(terse_ctx_t *ctx);

#endif
