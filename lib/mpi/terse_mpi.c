/* terse_mpi.c - terse_comm_create_from_mpi: the start-up exchange runs through
 * terse's out-of-band hook over MPI_Allgather (no rendezvous port). */
#include "terse_mpi.h"

#include <stdlib.h>

typedef struct mpi_oob {
    MPI_Comm comm;
    int status;
} mpi_oob_t;

/* MPI_Allgather is blocking: the request only carries its outcome. */
static terse_status_t oob_allgather(void *sbuf, void *rbuf, size_t len, void *info, void **req)
{
    mpi_oob_t *o = info;
    if (len > (size_t)0x7fffffff)
        return TERSE_ERR_INVALID_ARG;
    o->status = MPI_Allgather(sbuf, (int)len, MPI_BYTE, rbuf, (int)len, MPI_BYTE, o->comm);
    *req = o;
    return TERSE_OK;
}

static terse_status_t oob_test(void *req)
{
    return ((mpi_oob_t *)req)->status == MPI_SUCCESS ? TERSE_OK : TERSE_ERR_SYSTEM;
}

static terse_status_t oob_free(void *req)
{
    (void)req;
    return TERSE_OK;
}

terse_status_t terse_comm_create_from_mpi(MPI_Comm mpi_comm, terse_comm_t **comm)
{
    int rank, size;
    if (!comm || MPI_Comm_rank(mpi_comm, &rank) != MPI_SUCCESS || MPI_Comm_size(mpi_comm, &size) != MPI_SUCCESS)
        return TERSE_ERR_INVALID_ARG;
    mpi_oob_t o = {mpi_comm, MPI_SUCCESS};
    terse_comm_params_t p;
    terse_comm_params_init(&p);
    p.oob = (terse_oob_coll_t){oob_allgather, oob_test, oob_free, &o, size, rank};
    return terse_comm_create(&p, comm);
}
