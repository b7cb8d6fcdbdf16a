/* terse_mpi.c - terse_comm_create_from_mpi: the start-up exchange runs through
 * terse's out-of-band hook over MPI_Allgather (no rendezvous port). */
#include "terse_mpi.h"
#include "mpi_oob.h"

terse_status_t terse_comm_create_from_mpi(MPI_Comm mpi_comm, terse_comm_t **comm)
{
    int rank, size;
    if (!comm || MPI_Comm_rank(mpi_comm, &rank) != MPI_SUCCESS || MPI_Comm_size(mpi_comm, &size) != MPI_SUCCESS)
        return TERSE_ERR_INVALID_ARG;
    terse_mpi_oob_t o = {mpi_comm, MPI_SUCCESS};
    terse_comm_params_t p;
    terse_comm_params_init(&p);
    p.oob = terse__mpi_oob(&o, rank, size);
    return terse_comm_create(&p, comm);
}
