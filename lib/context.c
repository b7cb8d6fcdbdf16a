/*
 * context.c - the world context's life cycle: resolve identity from the API
 * and the launcher's environment, choose and open the transport, allocate
 * the send headers, exchange every rank's address and host through the
 * out-of-band allgather (the caller's hook, or the TCP
 * rendezvous at rank 0 behind the same shape), connect; goodbye and release.
 */
#include "context.h"
#include "bootstrap.h"
#include "comm.h"
#include "executor.h"
#include "log.h"
#include "memreg.h"
#include "net.h"
#include "progress.h"
#include "topology.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DERIVED_PORTS 8
/* TERSE_STASH_LIMIT's default: chunks parked off their slots (executor.c) */
#define STASH_LIMIT_DEFAULT ((size_t)256 << 20)

/* What every rank tells every other at start-up (receive keys travel with
 * the connections, made when a peer is first used). */
typedef struct ctx_blob {
    char addr[TERSE_TP_ADDR_MAX]; /* transport address */
    char tp_name[16];
    uint64_t host;                /* host identity (node awareness) */
    uint64_t nonce;
} ctx_blob_t;

/* Single-node default: every rank of the job derives the same range of
 * DERIVED_PORTS ports from the job id; the root takes the first free one.
 * The range lies below the kernel's ephemeral ports, which any outgoing
 * connection on the machine may hold. */
static void derived_root(const char *jobid, char *root, size_t rootlen)
{
    unsigned lo = 32768, hi = 60999, base, span;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%u %u", &lo, &hi) != 2)
            lo = 32768, hi = 60999;
        fclose(f);
    }
    if (lo >= 10000 + 1000 + DERIVED_PORTS)
        base = 10000, span = lo - 10000 - DERIVED_PORTS;
    else if (hi + 1000 + DERIVED_PORTS <= 65535)
        base = hi + 1, span = 65535 - hi - DERIVED_PORTS;
    else
        base = 20000, span = 20000;
    unsigned p = base + (unsigned)(terse__hash64(jobid, strlen(jobid), 0) % span);
    snprintf(root, rootlen, "127.0.0.1:%u-%u", p, p + DERIVED_PORTS - 1);
}

/* Rank and size: API > TERSE_* > launcher; the root address and secret the
 * same way (only for the built-in rendezvous). */
static terse_status_t resolve_identity(terse_ctx_t *ctx, const terse_comm_params_t *p, char *root,
                                       size_t rootlen, char *secret, size_t seclen)
{
    terse_launch_env_t env;
    terse__config_launch_env(&env);
    const char *src;
    if (p->oob.allgather) {
        ctx->rank = p->oob.oob_ep;
        ctx->size = p->oob.n_oob_eps;
        src = "the out-of-band hook";
    } else if (p->size > 0) {
        ctx->rank = p->rank;
        ctx->size = p->size;
        src = "parameters";
    } else if (ctx->cfg.size > 0 && ctx->cfg.rank >= 0) {
        ctx->rank = ctx->cfg.rank;
        ctx->size = ctx->cfg.size;
        src = "TERSE_RANK/TERSE_SIZE";
    } else if (env.source) {
        ctx->rank = env.rank;
        ctx->size = env.size;
        src = env.source;
    } else {
        TERSE_WARN(INIT, "cannot tell this process's rank and size: pass them in "
                         "terse_comm_params_t, set TERSE_RANK/TERSE_SIZE, or launch with "
                         "mpirun, srun or torchrun");
        return TERSE_ERR_INVALID_ARG;
    }
    if (ctx->size < 1 || ctx->rank < 0 || ctx->rank >= ctx->size || ctx->size > (1 << 20)) {
        TERSE_WARN(INIT, "invalid rank %d / size %d (from %s)", ctx->rank, ctx->size, src);
        return TERSE_ERR_INVALID_ARG;
    }
    if (p->oob.allgather && (!p->oob.req_test || !p->oob.req_free)) {
        TERSE_WARN(INIT, "the out-of-band hook needs allgather, req_test and req_free");
        return TERSE_ERR_INVALID_ARG;
    }
    root[0] = 0;
    if (p->oob.allgather)
        ; /* no rendezvous address */
    else if (p->root_addr && *p->root_addr)
        snprintf(root, rootlen, "%s", p->root_addr);
    else if (ctx->cfg.root_addr[0])
        snprintf(root, rootlen, "%s", ctx->cfg.root_addr);
    else if (env.master[0])
        snprintf(root, rootlen, "%s", env.master);
    else if (env.jobid[0])
        derived_root(env.jobid, root, rootlen);
    else if (ctx->size == 1)
        snprintf(root, rootlen, "127.0.0.1:0");
    else {
        TERSE_WARN(INIT, "no rendezvous address: set TERSE_ROOT_ADDR=host:port (or MASTER_ADDR "
                         "and MASTER_PORT)");
        return TERSE_ERR_INVALID_ARG;
    }
    secret[0] = 0;
    if (p->secret && *p->secret)
        snprintf(secret, seclen, "%s", p->secret);
    else if (ctx->cfg.secret[0])
        snprintf(secret, seclen, "%s", ctx->cfg.secret);
    else if (p->oob.allgather)
        ; /* drawn at random and agreed through the hook */
    else if (env.jobid[0])
        snprintf(secret, seclen, "job:%s", env.jobid);
    else
        snprintf(secret, seclen, "root:%s", root);
    TERSE_INFO(INIT, "rank %d of %d (from %s)%s%s", ctx->rank, ctx->size, src, root[0] ? ", root " : "", root);
    return TERSE_OK;
}

uint64_t terse__host_id(const char *override)
{
    if (override && *override)
        return terse__hash64(override, strlen(override), 0x686f7374ull);
    char buf[320] = "";
    size_t n = 0;
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY);
    if (fd >= 0) {
        ssize_t k = read(fd, buf, 64);
        n = k > 0 ? (size_t)k : 0;
        close(fd);
    }
    if (gethostname(buf + n, sizeof(buf) - n - 1) == 0)
        n += strlen(buf + n);
    return terse__hash64(buf, n, 0x686f7374ull);
}

static uint64_t random_nonce(void)
{
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        if (read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
            v = 0;
        close(fd);
    }
    return v ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(terse__now() * 1e9);
}

/* ---- the out-of-band allgather ---------------------------------------- */

/* Run one allgather through the hook until done or the deadline. */
static terse_status_t oob_allgather(const terse_oob_coll_t *oob, void *mine, void *all, size_t len,
                                    double deadline)
{
    void *req = NULL;
    terse_status_t st = oob->allgather(mine, all, len, oob->coll_info, &req);
    if (st != TERSE_OK) {
        TERSE_WARN(BOOT, "out-of-band allgather failed: %s", terse_strerror(st));
        return st;
    }
    while ((st = oob->req_test(req)) == TERSE_IN_PROGRESS) {
        if (terse__now() > deadline) {
            TERSE_WARN(BOOT, "out-of-band allgather did not complete in time");
            oob->req_free(req);
            return TERSE_ERR_TIMEOUT;
        }
        usleep(1000);
    }
    oob->req_free(req);
    if (st != TERSE_OK)
        TERSE_WARN(BOOT, "out-of-band allgather failed: %s", terse_strerror(st));
    return st;
}

/* The built-in rendezvous in the hook's shape: blocking, so test has nothing to wait for. */
typedef struct boot_oob {
    terse_boot_t boot;
    double deadline;
} boot_oob_t;

static terse_status_t boot_oob_allgather(void *sbuf, void *rbuf, size_t len, void *info, void **req)
{
    boot_oob_t *b = info;
    terse_status_t st = terse__boot_allgather(&b->boot, sbuf, len, rbuf, b->deadline);
    *req = (void *)(intptr_t)st;
    return TERSE_OK;
}
static terse_status_t boot_oob_test(void *req) { return (terse_status_t)(intptr_t)req; }
static terse_status_t boot_oob_free(void *req)
{
    (void)req;
    return TERSE_OK;
}

/* The IPv4 address a hook-bootstrapped rank listens on: TERSE_BIND_ADDR, else
 * what the host name resolves to, else the loopback. */
static void default_bind_ip(char *ip, size_t len)
{
    char host[256];
    struct addrinfo hints = {.ai_family = AF_INET}, *res = NULL;
    snprintf(ip, len, "127.0.0.1");
    if (gethostname(host, sizeof(host)) == 0 && getaddrinfo(host, NULL, &hints, &res) == 0 && res) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, (socklen_t)len);
        freeaddrinfo(res);
    }
}

/* ---- slots and teardown ----------------------------------------------- */

/* terse_tp_slots_fn: a peer connects; its receive slots, on the NIC's NUMA
 * node when the transport has one. */
static void *slots_for(void *arg, int peer, size_t *len)
{
    terse_ctx_t *ctx = arg;
    *len = ctx->slots_len;
    if (peer < 0 || peer >= ctx->size || peer == ctx->rank)
        return NULL;
    if (!ctx->slots[peer])
        ctx->slots[peer] = terse__topo_alloc(ctx->tp_ops->device(ctx->tp), ctx->slots_len);
    return ctx->slots[peer];
}

static terse_status_t setup_slots(terse_ctx_t *ctx)
{
    ctx->chunk = ctx->cfg.chunk_size;
    ctx->nslots = ctx->cfg.slots;
    ctx->slot_stride = TERSE_HDR_SIZE + ctx->chunk;
    ctx->slots_len = (size_t)ctx->nslots * ctx->slot_stride;
    size_t nslot = (size_t)ctx->size * (size_t)ctx->nslots;
    ctx->slots = calloc((size_t)ctx->size, sizeof(char *));
    /* Registered, so pages of its own like the slots: with rdma-core's fork
     * support on, a registration is MADV_DONTFORK, and a heap page shared
     * with it would be missing in a forked child (a DataLoader worker). */
    ctx->hdr_len = nslot * TERSE_HDR_SIZE;
    ctx->hdr_region = terse__topo_alloc(ctx->tp_ops->device(ctx->tp), ctx->hdr_len);
    ctx->chans = calloc((size_t)ctx->size, sizeof(terse_chan_t));
    ctx->host = calloc((size_t)ctx->size, sizeof(uint64_t));
    ctx->owed = calloc((size_t)ctx->size, sizeof(int));
    ctx->ready = calloc((size_t)ctx->size, sizeof(int));
    if (!ctx->slots || !ctx->hdr_region || !ctx->chans || !ctx->host || !ctx->owed || !ctx->ready)
        return TERSE_ERR_NO_MEMORY;
    memset(ctx->hdr_region, 0, ctx->hdr_len);
    return ctx->tp_ops->mem_reg(ctx->tp, ctx->hdr_region, ctx->hdr_len, &ctx->hdr_mr);
}

static void ctx_free(terse_ctx_t *ctx)
{
    terse__progress_fini(ctx);
    if (ctx->tp) {
        terse__memreg_clear(ctx);
        if (ctx->hdr_mr)
            ctx->tp_ops->mem_dereg(ctx->tp, ctx->hdr_mr);
        ctx->tp_ops->close(ctx->tp, terse__now() + (ctx->cfg.timeout_sec < 10 ? ctx->cfg.timeout_sec : 10));
    }
    for (int p = 0; ctx->chans && p < ctx->size; p++)
        while (ctx->chans[p].stash_head) {
            terse_stash_t *s = ctx->chans[p].stash_head;
            ctx->chans[p].stash_head = s->next;
            free(s);
        }
    for (int p = 0; ctx->slots && p < ctx->size; p++)
        if (ctx->slots[p])
            terse__topo_free(ctx->slots[p], ctx->slots_len);
    free(ctx->slots);
    terse__topo_free(ctx->hdr_region, ctx->hdr_len);
    free(ctx->chans);
    free(ctx->host);
    free(ctx->owed);
    free(ctx->ready);
    free(ctx);
}

/* ---- creation --------------------------------------------------------- */

/* Exchange the blobs, check them, connect. */
static terse_status_t meet_and_connect(terse_ctx_t *ctx, const terse_oob_coll_t *oob, const char *host,
                                       double deadline)
{
    ctx_blob_t mine, *all = calloc((size_t)ctx->size, sizeof(ctx_blob_t));
    const void **blobs = calloc((size_t)ctx->size, sizeof(void *));
    terse_status_t st = all && blobs ? TERSE_OK : TERSE_ERR_NO_MEMORY;
    memset(&mine, 0, sizeof(mine));
    size_t alen = 0;
    if (st == TERSE_OK)
        st = ctx->tp_ops->address(ctx->tp, mine.addr, &alen);
    snprintf(mine.tp_name, sizeof(mine.tp_name), "%s", ctx->tp_ops->name);
    mine.host = terse__host_id(host);
    if (st == TERSE_OK && ctx->size > 1)
        st = oob_allgather(oob, &mine, all, sizeof(mine), deadline);
    else if (st == TERSE_OK)
        all[0] = mine;
    for (int r = 0; st == TERSE_OK && r < ctx->size; r++) {
        if (strncmp(all[r].tp_name, ctx->tp_ops->name, sizeof(all[r].tp_name)) != 0) {
            TERSE_WARN(INIT, "rank %d uses transport '%.16s', this rank '%s': set TERSE_TRANSPORT "
                             "the same everywhere", r, all[r].tp_name, ctx->tp_ops->name);
            st = TERSE_ERR_MISMATCH;
        }
    }
    if (st == TERSE_OK) {
        for (int r = 0; r < ctx->size; r++) {
            blobs[r] = all[r].addr;
            ctx->host[r] = all[r].host;
        }
        st = ctx->tp_ops->connect(ctx->tp, blobs, deadline);
    }
    free(all);
    free(blobs);
    return st;
}

/* The caller's parameters, read no further than the caller's struct_size. */
static terse_status_t copy_params(const terse_comm_params_t *in, terse_comm_params_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!in)
        return TERSE_OK;
    size_t n = in->struct_size ? in->struct_size : sizeof(*in);
    if (n < offsetof(terse_comm_params_t, oob)) {
        TERSE_WARN(INIT, "terse_comm_params_t.struct_size %zu is too small (use terse_comm_params_init)", n);
        return TERSE_ERR_INVALID_ARG;
    }
    memcpy(out, in, n < sizeof(*out) ? n : sizeof(*out));
    return TERSE_OK;
}

terse_status_t terse__ctx_create(const terse_comm_params_t *params_in, terse_ctx_t **out)
{
    *out = NULL;
    terse_comm_params_t params;
    terse_status_t st = copy_params(params_in, &params);
    if (st != TERSE_OK)
        return st;
    terse_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return TERSE_ERR_NO_MEMORY;
    terse__config_load(&ctx->cfg);
    if (params.timeout_sec > 0)
        ctx->cfg.timeout_sec = params.timeout_sec;
    if (params.boot_timeout_sec > 0)
        ctx->cfg.boot_timeout_sec = params.boot_timeout_sec;
    if (ctx->cfg.boot_timeout_sec <= 0)
        ctx->cfg.boot_timeout_sec = ctx->cfg.timeout_sec;
    if (params.transport && *params.transport)
        snprintf(ctx->cfg.transport, sizeof(ctx->cfg.transport), "%s", params.transport);
    ctx->stash_limit = ctx->cfg.stash_limit ? ctx->cfg.stash_limit : STASH_LIMIT_DEFAULT;

    char root[256], secret[300];
    if ((st = resolve_identity(ctx, &params, root, sizeof(root), secret, sizeof(secret))) != TERSE_OK) {
        free(ctx);
        return st;
    }
    terse__log_set_rank(ctx->rank);
    double deadline = terse__now() + ctx->cfg.boot_timeout_sec;

    /* The built-in rendezvous stands behind the hook's shape. */
    boot_oob_t boot;
    memset(&boot, 0, sizeof(boot));
    boot.boot.fd = boot.boot.lfd = -1;
    boot.deadline = deadline;
    terse_oob_coll_t oob = params.oob;
    if (!oob.allgather)
        oob = (terse_oob_coll_t){boot_oob_allgather, boot_oob_test, boot_oob_free, &boot, ctx->size, ctx->rank};

    /* A hook without a secret: one drawn by every rank, agreed through the hook. */
    if (!secret[0] && ctx->size > 1) {
        uint64_t nonce = random_nonce(), *nonces = calloc((size_t)ctx->size, sizeof(uint64_t));
        st = nonces ? oob_allgather(&oob, &nonce, nonces, sizeof(nonce), deadline) : TERSE_ERR_NO_MEMORY;
        if (st == TERSE_OK)
            snprintf(secret, sizeof(secret), "oob:%016llx", (unsigned long long)terse__hash64(
                         nonces, sizeof(uint64_t) * (size_t)ctx->size, 0x6f6f62ull));
        free(nonces);
        if (st != TERSE_OK) {
            free(ctx);
            return st;
        }
    } else if (!secret[0]) {
        snprintf(secret, sizeof(secret), "single");
    }
    ctx->secret_hash = terse__hash64(secret, strlen(secret), 0x7465727365ull);

    /* A malformed root address is the caller's mistake: refuse it before
     * the (possibly slow) transport probe. */
    if (ctx->size > 1 && !params.oob.allgather && (st = terse__boot_check_root(root, NULL, NULL)) != TERSE_OK) {
        free(ctx);
        return st;
    }
    /* Choose the transport before the rendezvous: a rank that cannot use it
     * fails at once rather than leaving the others to time out. */
    terse_tp_params_t probe = {.rank = ctx->rank, .size = ctx->size, .ib_device = ctx->cfg.ib_device,
                               .ib_addr = ctx->cfg.ib_addr, .ib_gid_index = ctx->cfg.ib_gid_index};
    ctx->tp_ops = terse__tp_select(ctx->cfg.transport, &probe, &st);
    if (!ctx->tp_ops) {
        free(ctx);
        return st;
    }
    if (ctx->cfg.chunk_size == 0)
        ctx->cfg.chunk_size = ctx->tp_ops->default_chunk;

    int thread = params.progress_thread > 0 || (params.progress_thread == 0 && ctx->cfg.progress_thread);
    if ((st = terse__progress_init(ctx, thread)) != TERSE_OK) {
        ctx_free(ctx);
        return st;
    }
    char bind_ip[64] = "127.0.0.1";
    if (ctx->size > 1 && !params.oob.allgather) {
        if ((st = terse__boot_open(&boot.boot, ctx->rank, ctx->size, root, ctx->secret_hash)) != TERSE_OK) {
            terse__boot_close(&boot.boot);
            ctx_free(ctx);
            return st;
        }
        snprintf(bind_ip, sizeof(bind_ip), "%s", boot.boot.local_ip);
    } else if (ctx->size > 1) {
        default_bind_ip(bind_ip, sizeof(bind_ip));
    }
    terse_tp_params_t tpp = {.rank = ctx->rank, .size = ctx->size, .secret_hash = ctx->secret_hash,
                             .bind_addr = ctx->cfg.bind_addr[0] ? ctx->cfg.bind_addr : bind_ip,
                             .sockbuf = ctx->cfg.tcp_sockbuf, .timeout_sec = ctx->cfg.timeout_sec,
                             .max_msg = ctx->cfg.chunk_size, .max_outstanding = ctx->cfg.slots,
                             .bounce_slots = ctx->cfg.bounce_slots,
                             .ib_device = ctx->cfg.ib_device, .ib_addr = ctx->cfg.ib_addr,
                             .ib_gid_index = ctx->cfg.ib_gid_index, .ib_timeout = ctx->cfg.ib_timeout,
                             .ib_retry = ctx->cfg.ib_retry,
                             .place = ctx->cfg.tcp_place ? terse__exec_place : NULL, .place_arg = ctx,
                             .place_head = TERSE_HDR_SIZE, .slots = slots_for, .wake_fd = ctx->wake_fd};
    st = ctx->tp_ops->open(&tpp, &ctx->tp);
    if (st == TERSE_OK)
        st = setup_slots(ctx);
    if (st == TERSE_OK)
        st = meet_and_connect(ctx, &oob, params.host_id && *params.host_id ? params.host_id : ctx->cfg.host_id,
                              deadline);
    terse__boot_close(&boot.boot);
    if (st != TERSE_OK) {
        TERSE_WARN(INIT, "rank %d: communicator creation failed: %s", ctx->rank, terse_strerror(st));
        ctx_free(ctx);
        return st;
    }
    TERSE_INFO(INIT, "context ready: rank %d of %d over %s, %d slots x %zu bytes per peer", ctx->rank,
               ctx->size, ctx->tp_ops->name, ctx->nslots, ctx->chunk);
    *out = ctx;
    return TERSE_OK;
}

void terse__ctx_release(terse_ctx_t *ctx)
{
    terse__ctx_lock(ctx);
    int last = --ctx->refs == 0;
    terse__ctx_unlock(ctx);
    if (!last)
        return;
    terse__progress_fini(ctx); /* from here on this thread alone */
    TERSE_INFO(COLL, "rank %d: registrations %llu, zero-copy sends %llu, bounce sends %llu", ctx->rank,
               (unsigned long long)ctx->reg_created, (unsigned long long)ctx->reg_hits,
               (unsigned long long)ctx->reg_misses);
    /* Say goodbye so peers can tell a clean exit from a crash (those this
     * rank never wrote to wait for nothing from it). */
    for (int p = 0; p < ctx->size; p++)
        if (p != ctx->rank && !ctx->chans[p].lost && ctx->chans[p].talked)
            ctx->tp_ops->write_notify(ctx->tp, p, NULL, 0, 0, TERSE_IMM(TERSE_IMM_BYE, 0), UINT64_MAX);
    ctx_free(ctx);
}
