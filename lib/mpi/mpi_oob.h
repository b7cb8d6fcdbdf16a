/*
 * mpi_oob.h - terse's out-of-band hook over an MPI allgather, shared by
 * libterse_mpi (which calls MPI_Allgather) and libterse_pmpi (which must
 * call PMPI_Allgather: it is the MPI_Allgather). Define TERSE_OOB_ALLGATHER
 * before including it to choose.
 */
#ifndef TERSE_MPI_OOB_H
#define TERSE_MPI_OOB_H

#include <mpi.h>
#include "terse.h"

#ifndef TERSE_OOB_ALLGATHER
#define TERSE_OOB_ALLGATHER MPI_Allgather
#endif

typedef struct terse_mpi_oob {
    MPI_Comm comm;
    int status;
} terse_mpi_oob_t;

/* The MPI allgather is blocking: the request only carries its outcome. */
static terse_status_t terse__mpi_oob_allgather(void *sbuf, void *rbuf, size_t len, void *info, void **req)
{
    terse_mpi_oob_t *o = info;
    if (len > (size_t)0x7fffffff)
        return TERSE_ERR_INVALID_ARG;
    o->status = TERSE_OOB_ALLGATHER(sbuf, (int)len, MPI_BYTE, rbuf, (int)len, MPI_BYTE, o->comm);
    *req = o;
    return TERSE_OK;
}

static terse_status_t terse__mpi_oob_test(void *req)
{
    return ((terse_mpi_oob_t *)req)->status == MPI_SUCCESS ? TERSE_OK : TERSE_ERR_SYSTEM;
}

static terse_status_t terse__mpi_oob_free(void *req)
{
    (void)req;
    return TERSE_OK;
}

/* The hook for o->comm, of which this process is rank `rank` of `size`. */
static inline terse_oob_coll_t terse__mpi_oob(terse_mpi_oob_t *o, int rank, int size)
{
    return (terse_oob_coll_t){terse__mpi_oob_allgather, terse__mpi_oob_test, terse__mpi_oob_free, o, size, rank};
}

#endif
