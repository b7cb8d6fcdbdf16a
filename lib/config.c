/*
 * config.c - the only place terse reads the environment.
 *
 * Every knob is one row of terse_config_table: name, type, default, help and
 * the field it fills. API parameters override these values later, in context.c.
 */
#include "terse_config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

typedef enum { CFG_STR, CFG_INT, CFG_SIZE, CFG_DOUBLE } cfg_type_t;

typedef struct {
    const char *name;
    cfg_type_t type;
    const char *defval;
    size_t offset;
    size_t len; /* buffer length for strings */
    const char *help;
} cfg_row_t;

#define ROW_S(n, f, d, h) {n, CFG_STR, d, offsetof(terse_config_t, f), sizeof(((terse_config_t *)0)->f), h}
#define ROW(n, t, f, d, h) {n, t, d, offsetof(terse_config_t, f), 0, h}

static const cfg_row_t terse_config_table[] = {
    ROW_S("TERSE_DEBUG", debug, "WARN", "Log level: NONE, WARN, INFO or TRACE."),
    ROW_S("TERSE_DEBUG_SUBSYS", debug_subsys, "ALL",
          "Comma-separated subsystems to log: INIT, BOOT, NET, COLL, ALL; prefix ^ to exclude."),
    ROW_S("TERSE_TRANSPORT", transport, "auto",
          "Transport: tcp, verbs, or auto (verbs when a usable device exists, else tcp)."),
    ROW("TERSE_TIMEOUT", CFG_DOUBLE, timeout_sec, "60",
        "Seconds to wait for a silent peer before failing with TERSE_ERR_TIMEOUT."),
    ROW("TERSE_BOOT_TIMEOUT", CFG_DOUBLE, boot_timeout_sec, "0",
        "Seconds communicator creation waits for every rank to join; 0: TERSE_TIMEOUT."),
    ROW("TERSE_PROGRESS_THREAD", CFG_INT, progress_thread, "0",
        "1: a progress thread per context advances requests while the caller computes."),
    ROW_S("TERSE_ROOT_ADDR", root_addr, "",
          "host:port or host:first-last of rank 0's rendezvous listener (default "
          "MASTER_ADDR:MASTER_PORT, else 127.0.0.1 and 8 ports derived from the job id)."),
    ROW_S("TERSE_SECRET", secret, "",
          "Per-job secret every connection must present (default: derived from the launcher job id)."),
    ROW_S("TERSE_BIND_ADDR", bind_addr, "",
          "Local IPv4 address the TCP transport listens on (default: the address that reaches the root)."),
    ROW("TERSE_CHUNK_SIZE", CFG_SIZE, chunk_size, "0",
        "Payload bytes per pipelined chunk and per receive slot; 0: the transport's default "
        "(tcp 256K, verbs 1M)."),
    ROW("TERSE_SLOTS", CFG_INT, slots, "8", "Receive slots (flow-control credits) per peer."),
    ROW("TERSE_BOUNCE_SLOTS", CFG_INT, bounce_slots, "32",
        "verbs: chunk-sized slots of the one registered pool that payloads from unregistered memory are "
        "copied through, shared by all peers (it does not grow with the job; when it is empty sends "
        "wait for completions)."),
    ROW_S("TERSE_ALLREDUCE_ALGO", allreduce_algo, "auto",
          "Allreduce algorithm: auto, rd (recursive doubling), rabenseifner (recursive halving + "
          "doubling) or ring (pipelined ring reduce-scatter + allgather)."),
    ROW_S("TERSE_COMPRESSED_ALGO", compressed_algo, "auto",
          "Compressed allreduce algorithm when the handle asks for auto: allgather (of codes), "
          "two_phase (compressed reduce-scatter to chunk owners + allgather) or ring."),
    ROW("TERSE_COMPRESSED_THRESHOLD", CFG_SIZE, compressed_threshold, "1M",
        "With auto, compressed allreduces of unbiased codecs on more than 2 ranks use two_phase from "
        "this many float32 bytes up, allgather of codes below (fewer steps; measured crossover on TCP "
        "loopback, docs/performance.md)."),
    ROW("TERSE_LINK_GBPS", CFG_DOUBLE, link_gbps, "0",
        "The network's rate in Gbit/s per rank (e.g. 1, 10, 100). When set, the compressed allreduce's auto "
        "choice weighs bytes against steps on it (allgather: n-1 whole codes; two_phase: 2(n-1) codes of 1/n) "
        "instead of TERSE_COMPRESSED_THRESHOLD, so a bandwidth-bound job sends the fewest bytes."),
    ROW("TERSE_LINK_LATENCY_US", CFG_DOUBLE, link_latency_us, "30",
        "Per-message latency in microseconds for the same model (TERSE_LINK_GBPS)."),
    ROW("TERSE_RD_THRESHOLD", CFG_SIZE, rd_threshold, "0",
        "With auto, allreduce messages up to this many bytes use recursive doubling; 0 means "
        "512K / log2(ranks), measured on TCP loopback (docs/performance.md)."),
    ROW("TERSE_RING_THRESHOLD", CFG_SIZE, ring_threshold, "1M",
        "With auto, allreduce messages above this many bytes use the ring; smaller ones above "
        "TERSE_RD_THRESHOLD use Rabenseifner."),
    ROW("TERSE_TCP_SOCKBUF", CFG_SIZE, tcp_sockbuf, "4M", "Socket send/receive buffer of TCP data connections."),
    ROW("TERSE_TCP_PLACE", CFG_INT, tcp_place, "1",
        "1: a received chunk that is only copied goes straight into the user's buffer; "
        "0: every chunk lands in a receive slot first."),
    ROW("TERSE_REG_CACHE", CFG_INT, reg_cache, "0",
        "Buffers of >= 64 KiB that terse registers by itself for zero-copy sends, kept in an LRU "
        "cache of this many entries (0: off). With it on, call terse_mem_release() before freeing."),
    ROW("TERSE_SPIN_US", CFG_INT, spin_us, "50",
        "Microseconds a waiting call keeps polling (yielding the CPU between polls) before it "
        "sleeps in the kernel; 0 sleeps at once."),
    ROW_S("TERSE_IB_DEVICE", ib_device, "",
          "verbs: RDMA device and port, name[:port] (default: the first active port)."),
    ROW_S("TERSE_IB_ADDR", ib_addr, "",
          "verbs: IPv4 address on the RDMA device for RDMA CM (default: from the port's RoCE v2 GID)."),
    ROW("TERSE_IB_GID_INDEX", CFG_INT, ib_gid_index, "-1",
        "verbs: GID index whose IPv4 address to use (-1: the first IPv4-mapped GID)."),
    ROW("TERSE_IB_TIMEOUT", CFG_INT, ib_timeout, "14",
        "verbs: QP ack timeout exponent (4.096 us * 2^n per try)."),
    ROW("TERSE_IB_RETRY_COUNT", CFG_INT, ib_retry, "7", "verbs: QP transport retry count (0-7)."),
    ROW("TERSE_STASH_LIMIT", CFG_SIZE, stash_limit, "256M",
        "Bytes of received chunks a rank may park off their receive slots so that one communicator "
        "never blocks another on a shared connection; beyond it the sender waits for credits."),
    ROW_S("TERSE_HOST_ID", host_id, "",
          "Host identity for node awareness (TERSE_SPLIT_NODE, local rank); default: boot id and "
          "host name. Set it to fake several nodes on one machine."),
    ROW("TERSE_RANK", CFG_INT, rank, "-1", "Rank of this process (overrides launcher variables)."),
    ROW("TERSE_SIZE", CFG_INT, size, "0", "Number of ranks (overrides launcher variables)."),
};
#define NROWS (sizeof(terse_config_table) / sizeof(terse_config_table[0]))

int terse__parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno || s[0] == '-')
        return -1;
    switch (toupper((unsigned char)*end)) {
    case 'K': v <<= 10; end++; break;
    case 'M': v <<= 20; end++; break;
    case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (toupper((unsigned char)*end) == 'I') /* KiB, MiB, GiB */
        end++;
    if (toupper((unsigned char)*end) == 'B')
        end++;
    if (*end)
        return -1;
    *out = (size_t)v;
    return 0;
}

static int parse_row(const cfg_row_t *row, const char *val, terse_config_t *cfg)
{
    char *dst = (char *)cfg + row->offset;
    char *end;
    switch (row->type) {
    case CFG_STR:
        if (strlen(val) >= row->len)
            return -1;
        strcpy(dst, val);
        return 0;
    case CFG_INT: {
        errno = 0;
        long v = strtol(val, &end, 10);
        if (end == val || *end || errno || v < -1 || v > 1 << 30)
            return -1;
        *(int *)dst = (int)v;
        return 0;
    }
    case CFG_SIZE:
        return terse__parse_size(val, (size_t *)dst);
    case CFG_DOUBLE: {
        errno = 0;
        double v = strtod(val, &end);
        if (end == val || *end || errno || !(v > 0))
            return -1;
        *(double *)dst = v;
        return 0;
    }
    }
    return -1;
}

static const char *getenv_nonempty(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

void terse__config_load(terse_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < NROWS; i++)
        parse_row(&terse_config_table[i], terse_config_table[i].defval, cfg);

    /* Logging first, so the warnings below honour TERSE_DEBUG. */
    for (size_t i = 0; i < 2; i++) {
        const char *v = getenv_nonempty(terse_config_table[i].name);
        if (v)
            parse_row(&terse_config_table[i], v, cfg);
    }
    terse__log_configure(cfg->debug, cfg->debug_subsys);

    for (size_t i = 2; i < NROWS; i++) {
        const cfg_row_t *row = &terse_config_table[i];
        const char *v = getenv_nonempty(row->name);
        if (v && parse_row(row, v, cfg) != 0) {
            TERSE_WARN(INIT, "ignoring %s=%s (unparsable); using default %s", row->name, v,
                       row->defval);
            parse_row(row, row->defval, cfg);
        }
    }
    if (cfg->slots < 2) {
        TERSE_WARN(INIT, "TERSE_SLOTS=%d too small, using 2", cfg->slots);
        cfg->slots = 2;
    }
    if (cfg->chunk_size && (cfg->chunk_size < 4096 || cfg->chunk_size > (1u << 30))) {
        TERSE_WARN(INIT, "TERSE_CHUNK_SIZE=%zu out of range [4K, 1G], using the transport default",
                   cfg->chunk_size);
        cfg->chunk_size = 0;
    }
    cfg->chunk_size &= ~(size_t)63; /* keep every dtype's elements whole */

    /* Unknown TERSE_* variables are usually typos: say so. */
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "TERSE_", 6) != 0)
            continue;
        size_t n = strcspn(*e, "=");
        int known = 0;
        for (size_t i = 0; i < NROWS && !known; i++)
            known = strlen(terse_config_table[i].name) == n &&
                    strncmp(terse_config_table[i].name, *e, n) == 0;
        /* Test and launcher helpers use TERSE_TEST_*, libterse_pmpi reads its own
         * TERSE_PMPI* (README, "Use it from an MPI code"), the Python package
         * TERSE_LIBRARY (where libterse is): not knobs of this table. */
        if (!known && strncmp(*e, "TERSE_TEST_", 11) != 0 && strncmp(*e, "TERSE_PMPI", 10) != 0 &&
            strncmp(*e, "TERSE_LIBRARY=", 14) != 0)
            TERSE_WARN(INIT, "unknown variable %.*s (see terse_perf --config)", (int)n, *e);
    }
}

static int env_int(const char *name, int *out)
{
    const char *v = getenv_nonempty(name);
    if (!v)
        return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > 1 << 30)
        return 0;
    *out = (int)x;
    return 1;
}

void terse__config_launch_env(terse_launch_env_t *env)
{
    static const struct {
        const char *source, *rank, *size, *job, *job2;
    } launchers[] = {
        {"TERSE", "TERSE_RANK", "TERSE_SIZE", NULL, NULL},
        {"OMPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_MCA_ess_base_jobid",
         "OMPI_MCA_orte_hnp_uri"},
        {"PMI", "PMI_RANK", "PMI_SIZE", "PMI_JOBID", "PMIX_NAMESPACE"},
        {"SLURM", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_STEP_ID"},
        {"TORCHRUN", "RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", NULL},
    };
    memset(env, 0, sizeof(*env));
    env->rank = -1;
    for (size_t i = 0; i < sizeof(launchers) / sizeof(launchers[0]); i++) {
        int r, s;
        if (!env_int(launchers[i].rank, &r) || !env_int(launchers[i].size, &s))
            continue;
        env->rank = r;
        env->size = s;
        env->source = launchers[i].source;
        const char *j1 = launchers[i].job ? getenv_nonempty(launchers[i].job) : NULL;
        const char *j2 = launchers[i].job2 ? getenv_nonempty(launchers[i].job2) : NULL;
        snprintf(env->jobid, sizeof(env->jobid), "%s:%s:%s", env->source, j1 ? j1 : "",
                 j2 ? j2 : "");
        break;
    }
    const char *ma = getenv_nonempty("MASTER_ADDR"), *mp = getenv_nonempty("MASTER_PORT");
    if (ma && mp)
        snprintf(env->master, sizeof(env->master), "%s:%s", ma, mp);
}

void terse__config_print(FILE *out)
{
    terse_config_t cur;
    terse__config_load(&cur);
    for (size_t i = 0; i < NROWS; i++) {
        const cfg_row_t *row = &terse_config_table[i];
        const char *v = getenv(row->name);
        fprintf(out, "%-22s default=%-8s %s%s%s\n    %s\n", row->name,
                row->defval[0] ? row->defval : "\"\"", v ? "current=" : "", v ? v : "",
                v ? "" : "", row->help);
    }
}
