/*
 * pmpi_comm.c - one terse communicator per MPI communicator, built at the
 * first call terse takes on it: the ranks of MPI_COMM_WORLD it spans become a
 * terse_comm_create_group on the world context (no new connections). The
 * entry hangs on the MPI communicator as an attribute; its copy callback
 * refuses inheritance (a dup gets its own), its delete callback frees it.
 * Also: the "terse_compress" hint (MPI_Comm_set_info), errors raised
 * through the communicator's error handler, and the statistics.
 */
#include "pmpi.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const reason_key[] = {
#define K_(name, key, text) key,
    TERSE_PMPI_REASONS(K_)
#undef K_
};

static pmpi_comm_t *entry_new(MPI_Comm comm)
{
    pmpi_global_t *g = &terse_pmpi__g;
    pmpi_comm_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->mpi = comm;
    e->cz = g->cz;
    PMPI_Comm_rank(comm, &e->rank);
    PMPI_Comm_size(comm, &e->size);
    int len = 0;
    PMPI_Comm_get_name(comm, e->name, &len);
    if (!len)
        snprintf(e->name, sizeof(e->name), "communicator #%d", ++g->unnamed); /* in the order first used */
    if (PMPI_Comm_set_attr(comm, g->keyval, e) != MPI_SUCCESS) {
        free(e);
        return NULL;
    }
    e->next = g->entries;
    g->entries = e;
    return e;
}

/* Collective over comm: every rank builds, then all agree it worked. */
static void entry_build(pmpi_comm_t *e)
{
    pmpi_global_t *g = &terse_pmpi__g;
    e->built = 1;
    e->why = TERSE_PMPI_FELL_COMM;
    int inter = 0;
    PMPI_Comm_test_inter(e->mpi, &inter);
    if (inter)
        return;
    int ok = 0;
    if (e->tc) {
        ok = 1; /* re-agreeing on a hint set after the first call */
    } else if (e->mpi == MPI_COMM_WORLD) {
        e->tc = g->world;
        ok = 1;
    } else {
        MPI_Group mine, world;
        int *idx = malloc(2 * (size_t)e->size * sizeof(int));
        if (idx && PMPI_Comm_group(e->mpi, &mine) == MPI_SUCCESS) {
            PMPI_Comm_group(MPI_COMM_WORLD, &world);
            for (int i = 0; i < e->size; i++)
                idx[i] = i;
            PMPI_Group_translate_ranks(mine, e->size, idx, world, idx + e->size);
            ok = 1;
            for (int i = 0; i < e->size; i++)
                ok &= idx[e->size + i] != MPI_UNDEFINED;
            if (ok && terse_comm_create_group(g->world, e->size, idx + e->size, &e->tc) != TERSE_OK)
                ok = 0, e->tc = NULL;
            PMPI_Group_free(&mine);
            PMPI_Group_free(&world);
        }
        free(idx);
        e->owned = e->tc != NULL;
    }
    /* the hint must be the same everywhere too */
    char cz[96];
    terse__compress_spec_format(&e->cz, cz, sizeof(cz));
    unsigned long long h = terse_pmpi__hash(cz, strlen(cz), TERSE_PMPI_HASH_SEED);
    unsigned long long v[3] = {h, ~h, (unsigned long long)!ok}, m[3];
    PMPI_Allreduce(v, m, 3, MPI_UNSIGNED_LONG_LONG, MPI_MAX, e->mpi);
    if (m[0] != h || m[1] != ~h) {
        if (e->rank == 0)
            fprintf(stderr, "terse-pmpi: %s: ranks set different terse_compress hints; running it exact\n",
                    e->name);
        memset(&e->cz, 0, sizeof(e->cz));
    }
    e->eligible = m[2] == 0;
    /* Within one host the MPI moves data through shared memory, which terse's
     * network transports do not beat (docs/performance.md): leave it those
     * calls. Host identity is terse's (boot id + host name, or TERSE_HOST_ID),
     * the same on every rank, so every rank decides alike. */
    if (e->eligible && !g->node && terse_comm_node_count(e->tc) == 1) {
        e->eligible = 0;
        e->why = TERSE_PMPI_FELL_NODE;
    }
    if (!e->eligible && e->owned) {
        terse_comm_destroy(e->tc);
        e->tc = NULL, e->owned = 0;
    }
}

/* Under MPI_THREAD_MULTIPLE nothing is taken, but statistics and the stats
 * query still look entries up from any thread. */
static pthread_mutex_t entries_lock = PTHREAD_MUTEX_INITIALIZER;

static pmpi_comm_t *lookup(MPI_Comm comm, int build);

pmpi_comm_t *terse_pmpi__comm(MPI_Comm comm, int build)
{
    if (!terse_pmpi__g.thread_multiple)
        return lookup(comm, build);
    pthread_mutex_lock(&entries_lock);
    pmpi_comm_t *e = lookup(comm, 0); /* never built: nothing is taken */
    pthread_mutex_unlock(&entries_lock);
    return e;
}

static pmpi_comm_t *lookup(MPI_Comm comm, int build)
{
    pmpi_global_t *g = &terse_pmpi__g;
    pmpi_comm_t *e;
    if (comm == g->last_mpi && g->last) {
        e = g->last;
    } else {
        int flag = 0;
        e = NULL;
        if (PMPI_Comm_get_attr(comm, g->keyval, &e, &flag) != MPI_SUCCESS || !flag)
            e = entry_new(comm);
        if (!e)
            return NULL;
        g->last_mpi = comm, g->last = e;
    }
    if (build && !e->built)
        entry_build(e);
    return e;
}

void terse_pmpi__fell(MPI_Comm comm, terse_pmpi_reason_t why, size_t bytes)
{
    if (!terse_pmpi__g.stats || !terse_pmpi__g.started || comm == MPI_COMM_NULL)
        return;
    pmpi_comm_t *e = terse_pmpi__comm(comm, 0);
    if (!e)
        return;
    if (terse_pmpi__g.thread_multiple)
        __atomic_add_fetch(&e->fell[why], 1, __ATOMIC_RELAXED);
    else
        e->fell[why]++, e->fell_bytes += bytes;
}

int terse_pmpi__raise(MPI_Comm comm, pmpi_comm_t *e, terse_status_t st)
{
    static int codes[32];
    int i = st < 0 && st > -32 ? -st : 0;
    if (!codes[i]) {
        int cls;
        if (PMPI_Add_error_class(&cls) != MPI_SUCCESS || PMPI_Add_error_code(cls, &codes[i]) != MPI_SUCCESS)
            codes[i] = MPI_ERR_OTHER;
    }
    const char *detail = NULL;
    if (e && e->tc)
        terse_comm_error(e->tc, &detail);
    char msg[MPI_MAX_ERROR_STRING];
    snprintf(msg, sizeof(msg), "terse: %s%s%s", terse_strerror(st), detail && *detail ? ": " : "",
             detail ? detail : "");
    if (codes[i] != MPI_ERR_OTHER)
        PMPI_Add_error_string(codes[i], msg);
    else
        fprintf(stderr, "terse-pmpi: %s\n", msg);
    PMPI_Comm_call_errhandler(comm, codes[i]);
    return codes[i];
}

void terse_pmpi__release_all(void)
{
    pmpi_global_t *g = &terse_pmpi__g;
    for (pmpi_comm_t *e = g->entries; e; e = e->next)
        if (!e->freed)
            PMPI_Comm_delete_attr(e->mpi, g->keyval); /* delete_attr frees its terse side */
    g->last_mpi = MPI_COMM_NULL, g->last = NULL;
}

static void print_one(const pmpi_comm_t *e)
{
    char fell[512] = "";
    size_t pos = 0;
    uint64_t nfell = 0;
    for (int r = 0; r < TERSE_PMPI_FELL_COUNT; r++)
        if (e->fell[r]) {
            nfell += e->fell[r];
            pos += (size_t)snprintf(fell + pos, sizeof(fell) - pos, "%s%s %llu", pos ? ", " : " (",
                                    reason_key[r], (unsigned long long)e->fell[r]);
        }
    if (pos)
        snprintf(fell + pos, sizeof(fell) - pos, ")");
    char lossy[256] = "";
    if (e->lossy_calls) {
        char cz[96];
        terse__compress_spec_format(&e->cz, cz, sizeof(cz));
        int n = snprintf(lossy, sizeof(lossy), "; compressed %s: %llu calls, ratio %.2f", cz,
                         (unsigned long long)e->lossy_calls, e->lossy_code > 0 ? e->lossy_raw / e->lossy_code : 0);
        if (e->cz.kind == TERSE_CZ_ABS || e->cz.kind == TERSE_CZ_REL)
            snprintf(lossy + n, sizeof(lossy) - (size_t)n, ", max error <= %.3g (bound %.3g)", e->eb_max_error,
                     e->eb_bound);
    }
    fprintf(stderr, "terse-pmpi stats [rank %d] %s (size %d)%s: terse took %llu calls, %.6g MB; "
                    "fell through %llu%s%s\n",
            terse_pmpi__g.world_rank, e->name, e->size, e->freed ? " (freed)" : "", (unsigned long long)e->taken,
            (double)e->taken_bytes / 1e6, (unsigned long long)nfell, fell, lossy);
}

void terse_pmpi__print_stats(void)
{
    pmpi_global_t *g = &terse_pmpi__g;
    /* oldest first */
    int n = 0;
    for (pmpi_comm_t *e = g->entries; e; e = e->next)
        n++;
    pmpi_comm_t **v = malloc((size_t)(n ? n : 1) * sizeof(*v));
    if (!v)
        return;
    int i = n;
    for (pmpi_comm_t *e = g->entries; e; e = e->next)
        v[--i] = e;
    for (i = 0; i < n; i++)
        if (g->stats == 2 || v[i]->rank == 0)
            print_one(v[i]);
    if (!g->active && g->world_rank == 0)
        fprintf(stderr, "terse-pmpi stats: terse was not active (%s)\n",
                g->thread_multiple ? "MPI_THREAD_MULTIPLE"
                : g->one_host      ? "every rank on one host: the MPI's shared memory; TERSE_PMPI_NODE=1 takes calls"
                                   : "disabled or start-up failed");
    free(v);
}

/* The "terse_compress" hint. MPI_Comm_set_info is collective, so the entry
 * is updated everywhere; the hint is compared across ranks when the terse
 * communicator is built (and, if set later, at the next call). */
TERSE_PMPI_EXPORT int MPI_Comm_set_info(MPI_Comm comm, MPI_Info info)
{
    int rc = PMPI_Comm_set_info(comm, info);
    if (rc != MPI_SUCCESS || !terse_pmpi__g.started || info == MPI_INFO_NULL)
        return rc;
    char val[128];
    int flag = 0;
    PMPI_Info_get(info, "terse_compress", (int)sizeof(val) - 1, val, &flag);
    if (!flag)
        return rc;
    pmpi_comm_t *e = terse_pmpi__comm(comm, 0);
    terse_compress_spec_t s;
    if (!e)
        return rc;
    if (terse__compress_spec_parse(val, &s)) {
        if (e->rank == 0)
            fprintf(stderr, "terse-pmpi: %s: terse_compress=%s is not a mode; ignored\n", e->name, val);
        return rc;
    }
    e->cz = s;
    e->cz_set = 1;
    if (e->built && e->eligible)
        e->built = 0; /* re-agree on the hint at the next call */
    return rc;
}

TERSE_PMPI_EXPORT int terse_pmpi_comm_stats(MPI_Comm comm, terse_pmpi_stats_t *out)
{
    if (!terse_pmpi__g.started || !out || comm == MPI_COMM_NULL)
        return MPI_ERR_ARG;
    pmpi_comm_t *e = terse_pmpi__comm(comm, 0);
    if (!e)
        return MPI_ERR_NO_MEM;
    memset(out, 0, sizeof(*out));
    out->active = terse_pmpi__g.active;
    out->taken = e->taken;
    out->taken_bytes = e->taken_bytes;
    for (int r = 0; r < TERSE_PMPI_FELL_COUNT; r++)
        out->fell_through += e->fell[r];
    out->compressed = e->lossy_calls;
    out->ratio = e->lossy_code > 0 ? e->lossy_raw / e->lossy_code : 0;
    out->max_error = e->eb_max_error;
    out->bound = e->eb_bound;
    return MPI_SUCCESS;
}
