/*
 * memreg.c - user memory registration: terse_mem_register/deregister, the
 * automatic cache behind TERSE_REG_CACHE, and the lookup the executor does
 * for every chunk it sends (a hit means the transport can send zero-copy).
 */
#include "memreg.h"
#include "log.h"

#include <stdint.h>
#include <stdlib.h>

#define PAGE ((uintptr_t)4096)

static terse_status_t reg_new(terse_comm_t *comm, const void *buf, size_t len, int automatic,
                              terse_memreg_t **out)
{
    uintptr_t lo = (uintptr_t)buf & ~(PAGE - 1), hi = ((uintptr_t)buf + len + PAGE - 1) & ~(PAGE - 1);
    terse_memreg_t *r = calloc(1, sizeof(*r));
    if (!r)
        return TERSE_ERR_NO_MEMORY;
    r->base = (char *)lo;
    r->len = hi - lo;
    r->automatic = automatic;
    r->last_use = ++comm->reg_clock;
    terse_status_t st = comm->tp_ops->mem_reg(comm->tp, r->base, r->len, &r->mr);
    if (st != TERSE_OK) {
        free(r);
        return st;
    }
    r->next = comm->regs;
    comm->regs = r;
    comm->stats.reg_created++;
    if (automatic)
        comm->reg_auto++;
    *out = r;
    return TERSE_OK;
}

static void reg_unlink_free(terse_comm_t *comm, terse_memreg_t *r)
{
    for (terse_memreg_t **pp = &comm->regs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    if (r->automatic)
        comm->reg_auto--;
    comm->tp_ops->mem_dereg(comm->tp, r->mr);
    free(r);
}

terse_tp_mr_t *terse__memreg_find(terse_comm_t *comm, const void *ptr, size_t len)
{
    const char *p = ptr;
    for (terse_memreg_t *r = comm->regs; r; r = r->next)
        if (p >= r->base && p + len <= r->base + r->len) {
            r->last_use = ++comm->reg_clock;
            comm->stats.reg_hits++;
            return r->mr;
        }
    comm->stats.reg_misses++;
    return NULL;
}

void terse__memreg_auto(terse_comm_t *comm, const void *buf, size_t len)
{
    if (comm->cfg.reg_cache <= 0 || !buf || len < ((size_t)64 << 10))
        return;
    const char *p = buf;
    for (terse_memreg_t *r = comm->regs; r; r = r->next)
        if (p >= r->base && p + len <= r->base + r->len) {
            r->last_use = ++comm->reg_clock;
            return;
        }
    /* Evict the least recently used automatic entry when full, but never
     * while requests are pending: their chunks may sit in a send queue. */
    while (comm->reg_auto >= comm->cfg.reg_cache && !comm->req_head) {
        terse_memreg_t *lru = NULL;
        for (terse_memreg_t *r = comm->regs; r; r = r->next)
            if (r->automatic && (!lru || r->last_use < lru->last_use))
                lru = r;
        if (!lru)
            break;
        reg_unlink_free(comm, lru);
    }
    terse_memreg_t *r;
    if (reg_new(comm, buf, len, 1, &r) != TERSE_OK)
        TERSE_INFO(NET, "registration cache: could not register %zu bytes; using bounce buffers", len);
}

void terse__memreg_clear(terse_comm_t *comm)
{
    while (comm->regs)
        reg_unlink_free(comm, comm->regs);
}

terse_status_t terse_mem_register(terse_comm_t *comm, void *buf, size_t len, terse_memreg_t **reg)
{
    if (!comm || !buf || !len || !reg)
        return TERSE_ERR_INVALID_ARG;
    *reg = NULL;
    return reg_new(comm, buf, len, 0, reg);
}

terse_status_t terse_mem_deregister(terse_comm_t *comm, terse_memreg_t *reg)
{
    if (!comm || !reg)
        return TERSE_ERR_INVALID_ARG;
    int found = 0;
    for (terse_memreg_t *r = comm->regs; r && !found; r = r->next)
        found = r == reg && !r->automatic;
    if (!found)
        return TERSE_ERR_INVALID_ARG;
    if (comm->req_head)
        return TERSE_ERR_BUSY;
    reg_unlink_free(comm, reg);
    return TERSE_OK;
}

terse_status_t terse_mem_release(terse_comm_t *comm, const void *buf, size_t len)
{
    if (!comm)
        return TERSE_ERR_INVALID_ARG;
    if (comm->req_head)
        return TERSE_ERR_BUSY;
    const char *p = buf;
    for (terse_memreg_t *r = comm->regs, *next; r; r = next) {
        next = r->next;
        if (r->automatic && p < r->base + r->len && r->base < p + len)
            reg_unlink_free(comm, r);
    }
    return TERSE_OK;
}

terse_status_t terse_comm_stats(const terse_comm_t *comm, terse_comm_stats_t *stats)
{
    if (!comm || !stats)
        return TERSE_ERR_INVALID_ARG;
    *stats = comm->stats;
    return TERSE_OK;
}
