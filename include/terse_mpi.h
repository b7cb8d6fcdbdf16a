/*
 * terse_mpi.h - create a terse communicator from an MPI communicator
 * (library libterse_mpi; the core library does not depend on MPI).
 */
#ifndef TERSE_MPI_H
#define TERSE_MPI_H

#include <mpi.h>
#include "terse.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Collective over mpi_comm: rank 0 chooses a rendezvous address and a random
 * job secret and broadcasts them with MPI_Bcast; every rank then joins with
 * its MPI rank and size. TERSE_ROOT_ADDR, if set, overrides the address
 * (needed when rank 0's host name does not resolve to a reachable address).
 * *comm must be released with terse_comm_destroy().
 */
TERSE_API terse_status_t terse_comm_create_from_mpi(MPI_Comm mpi_comm, terse_comm_t **comm);

#ifdef __cplusplus
}
#endif
#endif
