/*
 * comm.c - communicator life cycle: resolve identity from the API and the
 * launcher's environment, rendezvous, open and connect the transport,
 * allocate the registered receive slots; error latching; destroy.
 */
#include "comm.h"
#include "bootstrap.h"
#include "log.h"
#include "memreg.h"
#include "topology.h"
#include "net.h"
#include "schedule.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Resolve rank, size, root address and secret: API > TERSE_* > launcher. */
#define DERIVED_PORTS 8

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

static terse_status_t resolve_identity(terse_comm_t *comm, const terse_comm_params_t *p,
                                       char *root, size_t rootlen, char *secret, size_t seclen)
{
    terse_launch_env_t env;
    terse__config_launch_env(&env);
    const char *src;
    if (p && p->size > 0) {
        comm->rank = p->rank;
        comm->size = p->size;
        src = "parameters";
    } else if (comm->cfg.size > 0 && comm->cfg.rank >= 0) {
        comm->rank = comm->cfg.rank;
        comm->size = comm->cfg.size;
        src = "TERSE_RANK/TERSE_SIZE";
    } else if (env.source) {
        comm->rank = env.rank;
        comm->size = env.size;
        src = env.source;
    } else {
        TERSE_WARN(INIT, "cannot tell this process's rank and size: pass them in "
                         "terse_comm_params_t, set TERSE_RANK/TERSE_SIZE, or launch with "
                         "mpirun, srun or torchrun");
        return TERSE_ERR_INVALID_ARG;
    }
    if (comm->size < 1 || comm->rank < 0 || comm->rank >= comm->size || comm->size > (1 << 20)) {
        TERSE_WARN(INIT, "invalid rank %d / size %d (from %s)", comm->rank, comm->size, src);
        return TERSE_ERR_INVALID_ARG;
    }
    if (p && p->root_addr && *p->root_addr)
        snprintf(root, rootlen, "%s", p->root_addr);
    else if (comm->cfg.root_addr[0])
        snprintf(root, rootlen, "%s", comm->cfg.root_addr);
    else if (env.master[0])
        snprintf(root, rootlen, "%s", env.master);
    else if (env.jobid[0])
        derived_root(env.jobid, root, rootlen);
    else if (comm->size == 1)
        snprintf(root, rootlen, "127.0.0.1:0");
    else {
        TERSE_WARN(INIT, "no rendezvous address: set TERSE_ROOT_ADDR=host:port (or MASTER_ADDR "
                         "and MASTER_PORT)");
        return TERSE_ERR_INVALID_ARG;
    }
    if (p && p->secret && *p->secret)
        snprintf(secret, seclen, "%s", p->secret);
    else if (comm->cfg.secret[0])
        snprintf(secret, seclen, "%s", comm->cfg.secret);
    else if (env.jobid[0])
        snprintf(secret, seclen, "job:%s", env.jobid);
    else
        snprintf(secret, seclen, "root:%s", root);
    TERSE_INFO(INIT, "rank %d of %d (from %s), root %s", comm->rank, comm->size, src, root);
    return TERSE_OK;
}

static terse_status_t setup_slots(terse_comm_t *comm)
{
    comm->chunk = comm->cfg.chunk_size;
    comm->nslots = comm->cfg.slots;
    comm->slot_stride = TERSE_HDR_SIZE + comm->chunk;
    size_t nslot = (size_t)comm->size * (size_t)comm->nslots;
    size_t rlen = nslot * comm->slot_stride;
    /* on the NIC's NUMA node when the transport has one */
    comm->recv_len = rlen;
    comm->recv_region = terse__topo_alloc(comm->tp_ops->device(comm->tp), rlen);
    comm->hdr_region = aligned_alloc(64, nslot * TERSE_HDR_SIZE);
    comm->rkeys = calloc((size_t)comm->size, TERSE_TP_RKEY_MAX);
    comm->chans = calloc((size_t)comm->size, sizeof(terse_chan_t));
    if (!comm->recv_region || !comm->hdr_region || !comm->rkeys || !comm->chans)
        return TERSE_ERR_NO_MEMORY;
    memset(comm->hdr_region, 0, nslot * TERSE_HDR_SIZE);
    terse_status_t st = comm->tp_ops->mem_reg(comm->tp, comm->recv_region, rlen, &comm->recv_mr);
    if (st == TERSE_OK)
        st = comm->tp_ops->mem_reg(comm->tp, comm->hdr_region, nslot * TERSE_HDR_SIZE, &comm->hdr_mr);
    return st;
}

static void comm_free(terse_comm_t *comm)
{
    if (comm->tp) {
        terse__memreg_clear(comm);
        if (comm->recv_mr)
            comm->tp_ops->mem_dereg(comm->tp, comm->recv_mr);
        if (comm->hdr_mr)
            comm->tp_ops->mem_dereg(comm->tp, comm->hdr_mr);
        comm->tp_ops->close(comm->tp, terse__now() + (comm->cfg.timeout_sec < 10 ? comm->cfg.timeout_sec : 10));
    }
    terse__topo_free(comm->recv_region, comm->recv_len);
    free(comm->hdr_region);
    free(comm->rkeys);
    free(comm->chans);
    free(comm);
}

terse_status_t terse_comm_create(const terse_comm_params_t *params, terse_comm_t **out)
{
    if (!out)
        return TERSE_ERR_INVALID_ARG;
    *out = NULL;
    terse_comm_t *comm = calloc(1, sizeof(*comm));
    if (!comm)
        return TERSE_ERR_NO_MEMORY;
    terse__config_load(&comm->cfg);
    if (params && params->timeout_sec > 0)
        comm->cfg.timeout_sec = params->timeout_sec;
    if (params && params->transport && *params->transport)
        snprintf(comm->cfg.transport, sizeof(comm->cfg.transport), "%s", params->transport);

    char root[256], secret[300];
    terse_status_t st = resolve_identity(comm, params, root, sizeof(root), secret, sizeof(secret));
    if (st != TERSE_OK) {
        free(comm);
        return st;
    }
    terse__log_set_rank(comm->rank);
    comm->secret_hash = terse__hash64(secret, strlen(secret), 0x7465727365ull);
    double deadline = terse__now() + comm->cfg.timeout_sec;

    /* Choose the transport before the rendezvous: a rank that cannot use it
     * fails at once rather than leaving the others to time out. */
    terse_tp_params_t probe = {.rank = comm->rank, .size = comm->size, .ib_device = comm->cfg.ib_device,
                               .ib_addr = comm->cfg.ib_addr, .ib_gid_index = comm->cfg.ib_gid_index};
    comm->tp_ops = terse__tp_select(comm->cfg.transport, &probe, &st);
    if (!comm->tp_ops) {
        free(comm);
        return st;
    }

    if (comm->cfg.chunk_size == 0)
        comm->cfg.chunk_size = comm->tp_ops->default_chunk;

    terse_boot_t boot;
    if (comm->size > 1) {
        st = terse__boot_open(&boot, comm->rank, comm->size, root, comm->secret_hash);
        if (st != TERSE_OK) {
            terse__boot_close(&boot);
            free(comm);
            return st;
        }
    } else {
        memset(&boot, 0, sizeof(boot));
        boot.fd = boot.lfd = -1;
        snprintf(boot.local_ip, sizeof(boot.local_ip), "127.0.0.1");
    }
    terse_tp_params_t tpp = {.rank = comm->rank, .size = comm->size, .secret_hash = comm->secret_hash,
                             .bind_addr = comm->cfg.bind_addr[0] ? comm->cfg.bind_addr : boot.local_ip,
                             .sockbuf = comm->cfg.tcp_sockbuf, .timeout_sec = comm->cfg.timeout_sec,
                             .max_msg = comm->cfg.chunk_size, .max_outstanding = comm->cfg.slots,
                             .ib_device = comm->cfg.ib_device, .ib_addr = comm->cfg.ib_addr,
                             .ib_gid_index = comm->cfg.ib_gid_index, .ib_timeout = comm->cfg.ib_timeout,
                             .ib_retry = comm->cfg.ib_retry,
                             .place = comm->cfg.tcp_place ? terse__comm_place : NULL, .place_arg = comm, .place_head = TERSE_HDR_SIZE};
    st = comm->tp_ops->open(&tpp, &comm->tp);
    if (st == TERSE_OK)
        st = setup_slots(comm);

    /* Rendezvous: everyone's transport address and receive-slot key. */
    /* blob: transport address | receive-slot key | transport name */
    const size_t blen = TERSE_TP_ADDR_MAX + TERSE_TP_RKEY_MAX + 16;
    char mine[TERSE_TP_ADDR_MAX + TERSE_TP_RKEY_MAX + 16] = {0};
    char *all = NULL;
    const void **blobs = NULL;
    if (st == TERSE_OK) {
        size_t alen = 0;
        st = comm->tp_ops->address(comm->tp, mine, &alen);
        if (st == TERSE_OK)
            st = comm->tp_ops->mem_rkey(comm->tp, comm->recv_mr, mine + TERSE_TP_ADDR_MAX);
        snprintf(mine + TERSE_TP_ADDR_MAX + TERSE_TP_RKEY_MAX, 16, "%s", comm->tp_ops->name);
    }
    if (st == TERSE_OK) {
        all = calloc((size_t)comm->size, blen);
        blobs = calloc((size_t)comm->size, sizeof(void *));
        st = (all && blobs) ? TERSE_OK : TERSE_ERR_NO_MEMORY;
    }
    if (st == TERSE_OK && comm->size > 1)
        st = terse__boot_allgather(&boot, mine, blen, all, deadline);
    else if (st == TERSE_OK)
        memcpy(all, mine, blen);
    terse__boot_close(&boot);
    for (int r = 0; st == TERSE_OK && r < comm->size; r++) {
        const char *theirs = all + (size_t)r * blen + TERSE_TP_ADDR_MAX + TERSE_TP_RKEY_MAX;
        if (strncmp(theirs, comm->tp_ops->name, 16) != 0) {
            TERSE_WARN(INIT, "rank %d uses transport '%.16s', this rank '%s': set TERSE_TRANSPORT "
                             "the same everywhere", r, theirs, comm->tp_ops->name);
            st = TERSE_ERR_MISMATCH;
        }
    }
    if (st == TERSE_OK) {
        for (int r = 0; r < comm->size; r++) {
            blobs[r] = all + (size_t)r * blen;
            memcpy(comm->rkeys + (size_t)r * TERSE_TP_RKEY_MAX, all + (size_t)r * blen + TERSE_TP_ADDR_MAX,
                   TERSE_TP_RKEY_MAX);
        }
        st = comm->tp_ops->connect(comm->tp, blobs, deadline);
    }
    free(all);
    free(blobs);
    if (st != TERSE_OK) {
        TERSE_WARN(INIT, "rank %d: communicator creation failed: %s", comm->rank, terse_strerror(st));
        comm_free(comm);
        return st;
    }
    TERSE_INFO(INIT, "communicator ready: rank %d of %d over %s, %d slots x %zu bytes per peer",
               comm->rank, comm->size, comm->tp_ops->name, comm->nslots, comm->chunk);
    *out = comm;
    return TERSE_OK;
}

terse_status_t terse_comm_create_from_env(terse_comm_t **comm)
{
    return terse_comm_create(NULL, comm);
}

terse_status_t terse_comm_destroy(terse_comm_t *comm)
{
    if (!comm)
        return TERSE_ERR_INVALID_ARG;
    /* Pending requests die with the communicator; their writes must not read
     * buffers the caller may free next. */
    if (comm->req_head)
        for (int p = 0; p < comm->size; p++)
            if (p != comm->rank)
                comm->tp_ops->cancel(comm->tp, p, 0);
    while (comm->req_head) {
        terse_request_t *r = comm->req_head;
        comm->req_head = r->next;
        terse__sched_free(r);
    }
    TERSE_INFO(COLL, "rank %d: %llu calls, %llu bytes sent; chunks received in place %llu, through a "
                     "slot %llu; registrations %llu, zero-copy sends %llu, bounce sends %llu",
               comm->rank, (unsigned long long)comm->stats.calls, (unsigned long long)comm->stats.bytes_sent,
               (unsigned long long)comm->stats.chunks_placed, (unsigned long long)comm->stats.chunks_slotted,
               (unsigned long long)comm->stats.reg_created, (unsigned long long)comm->stats.reg_hits,
               (unsigned long long)comm->stats.reg_misses);
    /* Say goodbye so peers can tell a clean exit from a crash. */
    for (int p = 0; p < comm->size; p++)
        if (p != comm->rank && !comm->chans[p].lost)
            comm->tp_ops->write_notify(comm->tp, p, NULL, 0, NULL, 0, TERSE_IMM(TERSE_IMM_BYE, 0),
                                       UINT64_MAX);
    comm_free(comm);
    return TERSE_OK;
}

void terse__comm_fail(terse_comm_t *comm, terse_status_t st, int culprit, uint32_t seq,
                      int propagate, const char *fmt, ...)
{
    int first = comm->error == TERSE_OK;
    if (first) {
        comm->error = st;
        comm->error_seq = seq;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(comm->error_detail, sizeof(comm->error_detail), fmt, ap);
        va_end(ap);
        TERSE_WARN(COLL, "rank %d: %s: %s", comm->rank, terse_strerror(st), comm->error_detail);
    } else if (!terse__seq_ge(seq, comm->error_seq)) {
        comm->error_seq = seq; /* an earlier call cannot finish either */
    }
    terse__sched_fail_from(comm, comm->error_seq);
    if (propagate && first) {
        /* Best effort: every peer learns the status, the culprit and the first
         * failing call, so all ranks return the same error instead of waiting
         * for their timeout, and calls before it still complete. */
        uint32_t c = culprit < 0 || culprit >= (int)TERSE_CULPRIT_NONE ? TERSE_CULPRIT_NONE : (uint32_t)culprit;
        for (int p = 0; p < comm->size; p++)
            if (p != comm->rank && !comm->chans[p].lost) {
                comm->tp_ops->write_notify(comm->tp, p, NULL, 0, NULL, 0,
                                           TERSE_IMM(TERSE_IMM_ABORT_SEQ, seq), UINT64_MAX);
                comm->tp_ops->write_notify(comm->tp, p, NULL, 0, NULL, 0,
                                           TERSE_IMM(TERSE_IMM_ABORT, (c << 8) | ((uint32_t)(-st) & 0xff)),
                                           UINT64_MAX);
            }
    }
}

int terse_comm_rank(const terse_comm_t *comm) { return comm ? comm->rank : -1; }
int terse_comm_size(const terse_comm_t *comm) { return comm ? comm->size : -1; }
const char *terse_comm_transport(const terse_comm_t *comm) { return comm && comm->tp_ops ? comm->tp_ops->name : "none"; }

terse_status_t terse_comm_error(const terse_comm_t *comm, const char **detail)
{
    if (!comm)
        return TERSE_ERR_INVALID_ARG;
    if (detail)
        *detail = comm->error_detail;
    return comm->error;
}

void terse_config_print(void *file) { terse__config_print(file ? (FILE *)file : stdout); }
