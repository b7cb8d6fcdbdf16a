/*
 * memreg.c - user memory registration: terse_mem_register/deregister, the
 * automatic cache behind TERSE_REG_CACHE, and the lookup the executor does
 * for every chunk it sends (a hit means the transport can send zero-copy).
 * Registrations belong to the context: every communicator over it uses them.
 */
#include "memreg.h"
#include "progress.h"
#include "comm.h"
#include "log.h"

#include <stdint.h>
#include <stdlib.h>

#define PAGE ((uintptr_t)4096)

static terse_status_t reg_new(terse_ctx_t *ctx, const void *buf, size_t len, int automatic,
                              terse_memreg_t **out)
{
    uintptr_t lo = (uintptr_t)buf & ~(PAGE - 1), hi = ((uintptr_t)buf + len + PAGE - 1) & ~(PAGE - 1);
    terse_memreg_t *r = calloc(1, sizeof(*r));
    if (!r)
        return TERSE_ERR_NO_MEMORY;
    r->base = (char *)lo;
    r->len = hi - lo;
    r->automatic = automatic;
    r->last_use = ++ctx->reg_clock;
    terse_status_t st = ctx->tp_ops->mem_reg(ctx->tp, r->base, r->len, &r->mr);
    if (st != TERSE_OK) {
        free(r);
        return st;
    }
    r->next = ctx->regs;
    ctx->regs = r;
    ctx->reg_created++;
    if (automatic)
        ctx->reg_auto++;
    *out = r;
    return TERSE_OK;
}

static void reg_unlink_free(terse_ctx_t *ctx, terse_memreg_t *r)
{
    for (terse_memreg_t **pp = &ctx->regs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    if (r->automatic)
        ctx->reg_auto--;
    ctx->tp_ops->mem_dereg(ctx->tp, r->mr);
    free(r);
}

terse_tp_mr_t *terse__memreg_find(terse_ctx_t *ctx, const void *ptr, size_t len)
{
    const char *p = ptr;
    for (terse_memreg_t *r = ctx->regs; r; r = r->next)
        if (p >= r->base && p + len <= r->base + r->len) {
            r->last_use = ++ctx->reg_clock;
            ctx->reg_hits++;
            return r->mr;
        }
    ctx->reg_misses++;
    return NULL;
}

void terse__memreg_auto(terse_ctx_t *ctx, const void *buf, size_t len)
{
    if (ctx->cfg.reg_cache <= 0 || !buf || len < ((size_t)64 << 10))
        return;
    const char *p = buf;
    for (terse_memreg_t *r = ctx->regs; r; r = r->next)
        if (p >= r->base && p + len <= r->base + r->len) {
            r->last_use = ++ctx->reg_clock;
            return;
        }
    /* Evict the least recently used automatic entry when full, but never
     * while requests are pending: their chunks may sit in a send queue. */
    while (ctx->reg_auto >= ctx->cfg.reg_cache && !ctx->req_head) {
        terse_memreg_t *lru = NULL;
        for (terse_memreg_t *r = ctx->regs; r; r = r->next)
            if (r->automatic && (!lru || r->last_use < lru->last_use))
                lru = r;
        if (!lru)
            break;
        reg_unlink_free(ctx, lru);
    }
    terse_memreg_t *r;
    if (reg_new(ctx, buf, len, 1, &r) != TERSE_OK)
        TERSE_INFO(NET, "registration cache: could not register %zu bytes; using bounce buffers", len);
}

void terse__memreg_clear(terse_ctx_t *ctx)
{
    while (ctx->regs)
        reg_unlink_free(ctx, ctx->regs);
}

terse_status_t terse_mem_register(terse_comm_t *comm, void *buf, size_t len, terse_memreg_t **reg)
{
    if (!comm || !buf || !len || !reg)
        return TERSE_ERR_INVALID_ARG;
    *reg = NULL;
    terse__ctx_lock(comm->ctx);
    terse_status_t st = reg_new(comm->ctx, buf, len, 0, reg);
    terse__ctx_unlock(comm->ctx);
    return st;
}

terse_status_t terse_mem_deregister(terse_comm_t *comm, terse_memreg_t *reg)
{
    if (!comm || !reg)
        return TERSE_ERR_INVALID_ARG;
    int found = 0;
    terse__ctx_lock(comm->ctx);
    for (terse_memreg_t *r = comm->ctx->regs; r && !found; r = r->next)
        found = r == reg && !r->automatic;
    terse_status_t st = !found ? TERSE_ERR_INVALID_ARG : comm->ctx->req_head ? TERSE_ERR_BUSY : TERSE_OK;
    if (st == TERSE_OK)
        reg_unlink_free(comm->ctx, reg);
    terse__ctx_unlock(comm->ctx);
    return st;
}

terse_status_t terse_mem_release(terse_comm_t *comm, const void *buf, size_t len)
{
    if (!comm)
        return TERSE_ERR_INVALID_ARG;
    terse__ctx_lock(comm->ctx);
    terse_status_t st = comm->ctx->req_head ? TERSE_ERR_BUSY : TERSE_OK;
    const char *p = buf;
    for (terse_memreg_t *r = comm->ctx->regs, *next; st == TERSE_OK && r; r = next) {
        next = r->next;
        if (r->automatic && p < r->base + r->len && r->base < p + len)
            reg_unlink_free(comm->ctx, r);
    }
    terse__ctx_unlock(comm->ctx);
    return st;
}
