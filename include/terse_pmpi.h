/*
 * terse_pmpi.h - the query interface of libterse_pmpi, the MPI profiling
 * library that runs MPI_Allreduce (and Reduce_scatter_block, Allgather,
 * Bcast) over terse without a source change (README, "Use it from an MPI
 * code"). Codes that never include this header still get the statistics
 * line with TERSE_PMPI_STATS=1; this is for codes that want the numbers.
 */
#ifndef TERSE_PMPI_H
#define TERSE_PMPI_H

#include <mpi.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct terse_pmpi_stats {
    int active;              /* terse runs this job's eligible calls */
    uint64_t taken;          /* calls terse ran on this communicator */
    uint64_t taken_bytes;
    uint64_t fell_through;   /* calls left to the MPI (any reason) */
    uint64_t compressed;     /* calls run in a compressed mode */
    double ratio;            /* their input bytes / code bytes */
    double max_error;        /* error-bounded: the largest achieved-error bound of any call */
    double bound;            /* ... and the largest bound asked */
} terse_pmpi_stats_t;

/** MPI_SUCCESS, or MPI_ERR_ARG without the library started. Local. */
int terse_pmpi_comm_stats(MPI_Comm comm, terse_pmpi_stats_t *stats);

#ifdef __cplusplus
}
#endif
#endif
