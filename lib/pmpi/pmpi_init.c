/*
 * pmpi_init.c - MPI_Init / MPI_Init_thread / MPI_Finalize of libterse_pmpi:
 * after the MPI starts, terse's world context is created through the
 * out-of-band hook over PMPI_Allgather (no port, no launcher variables), and
 * it is released before the MPI finalizes.
 */
#define TERSE_OOB_ALLGATHER PMPI_Allgather
#include "../mpi/mpi_oob.h"
#include "pmpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

pmpi_global_t terse_pmpi__g = {.last_mpi = MPI_COMM_NULL};

/* Crossover with Open MPI's allreduce on this kind of machine
 * (docs/performance.md, "MPI interposition"): on the emulated 1 Gbit/s
 * cluster the MPI still wins at 256 KiB and terse from 1 MiB (over the
 * loopback's TCP terse wins from 64 KiB); below it the MPI's own algorithms
 * win on latency. */
#define DEFAULT_THRESHOLD ((size_t)1 << 20)

static size_t env_size(const char *name, size_t dflt)
{
    const char *v = getenv(name);
    size_t x;
    if (!v || !*v)
        return dflt;
    if (terse__size_parse(v, &x) == 0)
        return x;
    fprintf(stderr, "terse-pmpi: %s=%s is not a size; using %zu\n", name, v, dflt);
    return dflt;
}

static unsigned parse_colls(const char *v)
{
    static const struct { const char *name; unsigned bit; } names[] = {
        {"allreduce", TERSE_PMPI_ALLREDUCE}, {"reduce_scatter_block", TERSE_PMPI_REDUCE_SCATTER},
        {"allgather", TERSE_PMPI_ALLGATHER}, {"bcast", TERSE_PMPI_BCAST}, {"barrier", TERSE_PMPI_BARRIER}};
    /* Barrier falls through by default: the MPI's is as fast (docs/performance.md). */
    if (!v || !*v)
        return TERSE_PMPI_ALLREDUCE | TERSE_PMPI_REDUCE_SCATTER | TERSE_PMPI_ALLGATHER | TERSE_PMPI_BCAST;
    unsigned m = 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", v);
    for (char *save, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        size_t i;
        for (i = 0; i < sizeof(names) / sizeof(names[0]) && strcasecmp(t, names[i].name); i++)
            ;
        if (i < sizeof(names) / sizeof(names[0]))
            m |= names[i].bit;
        else if (!strcasecmp(t, "all"))
            m |= 31;
        else
            fprintf(stderr, "terse-pmpi: TERSE_PMPI_COLLS: unknown collective '%s' ignored\n", t);
    }
    return m;
}

/* Every rank must decide calls the same way: compare the job's settings. */
static int config_agrees(void)
{
    pmpi_global_t *g = &terse_pmpi__g;
    char cz[96];
    terse__compress_spec_format(&g->cz, cz, sizeof(cz));
    uint64_t h = terse_pmpi__hash(cz, strlen(cz), TERSE_PMPI_HASH_SEED);
    h = terse_pmpi__hash(&g->threshold, sizeof(g->threshold), h);
    h = terse_pmpi__hash(&g->colls, sizeof(g->colls), h);
    h = terse_pmpi__hash(&g->thread_multiple, sizeof(g->thread_multiple), h);
    h = terse_pmpi__hash(&g->node, sizeof(g->node), h);
    unsigned long long v[2] = {h, ~h}, m[2];
    if (PMPI_Allreduce(v, m, 2, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return 0;
    return m[0] == h && m[1] == ~h;
}

static int copy_attr(MPI_Comm old, int keyval, void *extra, void *in, void *out, int *flag)
{
    (void)old, (void)keyval, (void)extra, (void)in, (void)out;
    *flag = 0; /* a dup gets its own terse communicator, built at its first call */
    return MPI_SUCCESS;
}

static int delete_attr(MPI_Comm comm, int keyval, void *val, void *extra)
{
    (void)keyval, (void)extra;
    pmpi_comm_t *e = val;
    /* the compressed handles live on the communicator: they go first */
    for (int i = 0; i < TERSE_PMPI_CODEC_CACHE; i++)
        if (e->codec[i].h)
            terse_compressed_destroy(e->codec[i].h), e->codec[i].h = NULL;
    if (e->owned && e->tc)
        terse_comm_destroy(e->tc);
    e->tc = NULL, e->eligible = 0, e->freed = 1;
    if (terse_pmpi__g.last_mpi == comm)
        terse_pmpi__g.last_mpi = MPI_COMM_NULL, terse_pmpi__g.last = NULL;
    return MPI_SUCCESS;
}

void terse_pmpi__start(int provided)
{
    pmpi_global_t *g = &terse_pmpi__g;
    if (g->started)
        return;
    g->started = 1;
    PMPI_Comm_rank(MPI_COMM_WORLD, &g->world_rank);
    const char *v = getenv("TERSE_PMPI_STATS");
    g->stats = v && *v ? (!strcmp(v, "all") ? 2 : atoi(v) != 0) : 0;
    g->threshold = env_size("TERSE_PMPI_THRESHOLD", DEFAULT_THRESHOLD);
    g->colls = parse_colls(getenv("TERSE_PMPI_COLLS"));
    g->thread_multiple = provided == MPI_THREAD_MULTIPLE;
    g->node = getenv("TERSE_PMPI_NODE") && atoi(getenv("TERSE_PMPI_NODE")) != 0;
    const char *cz = getenv("TERSE_PMPI_COMPRESS");
    if (cz && *cz && terse__compress_spec_parse(cz, &g->cz)) {
        if (g->world_rank == 0)
            fprintf(stderr, "terse-pmpi: TERSE_PMPI_COMPRESS=%s is not a mode (none, abs:E, rel:R, cnat8, "
                            "natdither, ...[,min=BYTES]); running exact\n", cz);
        memset(&g->cz, 0, sizeof(g->cz));
    }
    PMPI_Comm_create_keyval(copy_attr, delete_attr, &g->keyval, NULL);
    const char *off = getenv("TERSE_PMPI");
    int want = !(off && !strcmp(off, "0"));
    if (!config_agrees()) {
        if (g->world_rank == 0)
            fprintf(stderr, "terse-pmpi: ranks have different TERSE_PMPI_* settings or thread levels; "
                            "every call falls through to the MPI\n");
        want = 0;
    }
    int size;
    PMPI_Comm_size(MPI_COMM_WORLD, &size);
    terse_status_t st = TERSE_ERR_UNSUPPORTED;
    if (want && !g->thread_multiple) {
        terse_mpi_oob_t o = {MPI_COMM_WORLD, MPI_SUCCESS};
        terse_comm_params_t p;
        terse_comm_params_init(&p);
        p.oob = terse__mpi_oob(&o, g->world_rank, size);
        /* MPI's blocking calls wait as long as the peers take: only a peer
         * that is gone, or silent for this long, is an error. */
        if (!getenv("TERSE_TIMEOUT"))
            p.timeout_sec = 600;
        st = terse_comm_create(&p, &g->world);
    }
    int ok = st == TERSE_OK, all;
    PMPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!all && g->world) {
        terse_comm_destroy(g->world);
        g->world = NULL;
    }
    if (want && !g->thread_multiple && !all && g->world_rank == 0)
        fprintf(stderr, "terse-pmpi: terse could not start on every rank (%s here); every call falls "
                        "through to the MPI\n", ok ? "fine" : terse_strerror(st));
    g->active = all && g->world;
    /* A job on one host has nothing for terse to take (the one-host rule, the
     * same on every rank): keep no context, sockets or memory for it. */
    if (g->active && !g->node && terse_comm_node_count(g->world) == 1) {
        terse_comm_destroy(g->world);
        g->world = NULL;
        g->active = 0;
        g->one_host = 1;
    }
}

void terse_pmpi__stop(void)
{
    pmpi_global_t *g = &terse_pmpi__g;
    if (!g->started)
        return;
    if (g->stats)
        terse_pmpi__print_stats();
    if (g->world)
        PMPI_Barrier(MPI_COMM_WORLD); /* nobody closes connections a peer still reads */
    terse_pmpi__release_all();
    if (g->world)
        terse_comm_destroy(g->world);
    g->world = NULL;
    g->active = 0;
    PMPI_Comm_free_keyval(&g->keyval);
    g->started = 0;
}

TERSE_PMPI_EXPORT int MPI_Init(int *argc, char ***argv)
{
    int rc = PMPI_Init(argc, argv);
    if (rc == MPI_SUCCESS) {
        int provided = MPI_THREAD_SINGLE;
        PMPI_Query_thread(&provided);
        terse_pmpi__start(provided);
    }
    return rc;
}

TERSE_PMPI_EXPORT int MPI_Init_thread(int *argc, char ***argv, int required, int *provided)
{
    int rc = PMPI_Init_thread(argc, argv, required, provided);
    if (rc == MPI_SUCCESS)
        terse_pmpi__start(*provided);
    return rc;
}

TERSE_PMPI_EXPORT int MPI_Finalize(void)
{
    terse_pmpi__stop();
    return PMPI_Finalize();
}
