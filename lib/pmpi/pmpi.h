/*
 * pmpi.h - libterse_pmpi internals: MPI calls intercepted through the MPI
 * profiling interface and run by terse when their arguments allow it.
 *
 * The decision to take a call over uses only what is identical on every
 * rank of the communicator (datatype, operator, count, communicator kind,
 * the job's configuration), so all ranks take it or all fall through to
 * PMPI_*: never a mix.
 */
#ifndef TERSE_PMPI_INTERNAL_H
#define TERSE_PMPI_INTERNAL_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "terse.h"
#include "terse_compress_spec.h"
#include "terse_pmpi.h"

/* The MPI names this library defines are its interface: visible. */
#define TERSE_PMPI_EXPORT __attribute__((visibility("default")))

/* Why a call fell through to the MPI. */
#define TERSE_PMPI_REASONS(X)                                                   \
    X(SMALL, "small", "below the size threshold")                               \
    X(DTYPE, "dtype", "datatype terse does not handle (derived, unsigned, pair)") \
    X(OP, "op", "operator terse does not have (user, logical, bitwise, *LOC)")  \
    X(COMM, "comm", "intercommunicator or ranks outside MPI_COMM_WORLD")        \
    X(NODE, "one-node", "every rank on one host: the MPI's shared memory wins (TERSE_PMPI_NODE=1 takes them)") \
    X(THREADS, "threads", "MPI_THREAD_MULTIPLE: calls may be concurrent")       \
    X(OFF, "off", "terse not active (TERSE_PMPI=0 or its start-up failed)")     \
    X(ARGS, "args", "MPI_BOTTOM, differing send/receive types or odd bytes")     \
    X(EB, "eb-refused", "error bound refused: NaN/Inf, constant field or below precision") \
    X(NONBLOCKING, "nonblocking", "non-blocking or persistent form")            \
    X(DISABLED, "disabled", "collective excluded by TERSE_PMPI_COLLS")

#define TERSE_PMPI_REASON_ENUM_(name, key, text) TERSE_PMPI_FELL_##name,
typedef enum { TERSE_PMPI_REASONS(TERSE_PMPI_REASON_ENUM_) TERSE_PMPI_FELL_COUNT } terse_pmpi_reason_t;
#undef TERSE_PMPI_REASON_ENUM_

enum { TERSE_PMPI_ALLREDUCE = 1, TERSE_PMPI_REDUCE_SCATTER = 2, TERSE_PMPI_ALLGATHER = 4,
       TERSE_PMPI_BCAST = 8, TERSE_PMPI_BARRIER = 16 };

#define TERSE_PMPI_CODEC_CACHE 4

/* What terse knows about one MPI communicator (cached as an attribute). */
typedef struct pmpi_comm {
    MPI_Comm mpi;
    terse_comm_t *tc;            /* NULL until built, or when not eligible */
    int built, eligible, owned;  /* owned: tc is ours to destroy (not the world) */
    terse_pmpi_reason_t why;     /* when not eligible */
    int rank, size;
    char name[MPI_MAX_OBJECT_NAME];
    terse_compress_spec_t cz;     /* compressed mode of this communicator */
    int cz_set;                   /* set by an MPI_Info hint (else the job's) */
    struct {
        size_t count;
        terse_compressed_t *h;
    } codec[TERSE_PMPI_CODEC_CACHE];
    int codec_next;
    uint64_t taken, taken_bytes, fell[TERSE_PMPI_FELL_COUNT], fell_bytes;
    uint64_t lossy_calls;         /* compressed calls */
    double lossy_raw, lossy_code; /* input bytes and code bytes of them */
    double eb_max_error, eb_bound;/* largest achieved error bound, and the bound */
    int freed;                    /* the MPI communicator was freed (stats kept) */
    struct pmpi_comm *next;
} pmpi_comm_t;

typedef struct {
    int started, active, thread_multiple;
    int node;                    /* TERSE_PMPI_NODE: take calls on one-host communicators too */
    int one_host;                /* the whole job is on one host (and not node): nothing is taken */
    int stats;                   /* TERSE_PMPI_STATS: 1 every communicator's rank 0 prints, 2 every rank */
    unsigned colls;              /* TERSE_PMPI_COLLS */
    size_t threshold;            /* TERSE_PMPI_THRESHOLD bytes */
    terse_compress_spec_t cz;    /* TERSE_PMPI_COMPRESS, job-wide */
    terse_comm_t *world;
    int world_rank;
    int keyval;
    int unnamed;                 /* communicators without a name met so far */
    pmpi_comm_t *entries;        /* every entry ever made (stats at finalize) */
    MPI_Comm last_mpi;           /* one-entry lookup cache */
    pmpi_comm_t *last;
} pmpi_global_t;

extern pmpi_global_t terse_pmpi__g;

/* FNV-1a: settings compared across ranks as one hash (and its complement). */
#define TERSE_PMPI_HASH_SEED 0xcbf29ce484222325ull
static inline uint64_t terse_pmpi__hash(const void *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ ((const unsigned char *)p)[i]) * 0x100000001b3ull;
    return h;
}

/* pmpi_init.c */
void terse_pmpi__start(int provided);
void terse_pmpi__stop(void);

/* pmpi_comm.c: the entry of comm (made if missing; built - collective over comm
 * - when build is set); NULL only without memory. */
pmpi_comm_t *terse_pmpi__comm(MPI_Comm comm, int build);
void terse_pmpi__fell(MPI_Comm comm, terse_pmpi_reason_t why, size_t bytes);
int terse_pmpi__raise(MPI_Comm comm, pmpi_comm_t *e, terse_status_t st);
void terse_pmpi__release_all(void);
void terse_pmpi__print_stats(void);

/* pmpi_coll.c: *taken = 0 means the caller must fall through to the MPI. */
int terse_pmpi__allreduce(const void *s, void *r, int count, MPI_Datatype dt, MPI_Op op, MPI_Comm comm, int *taken);
int terse_pmpi__reduce_scatter_block(const void *s, void *r, int count, MPI_Datatype dt, MPI_Op op, MPI_Comm comm,
                                     int *taken);
int terse_pmpi__allgather(const void *s, int scount, MPI_Datatype sdt, void *r, int rcount, MPI_Datatype rdt,
                          MPI_Comm comm, int *taken);
int terse_pmpi__bcast(void *buf, int count, MPI_Datatype dt, int root, MPI_Comm comm, int *taken);
int terse_pmpi__barrier(MPI_Comm comm, int *taken);

#endif
