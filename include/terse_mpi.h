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
 * Collective over mpi_comm: terse's start-up exchange (addresses, receive
 * keys, hosts, a random job secret) runs as MPI_Allgather calls through the
 * out-of-band hook of terse_comm_params_t - no rendezvous port, no root.
 * Ranks and size are mpi_comm's. The TCP transport listens on the address
 * this host's name resolves to, or TERSE_BIND_ADDR. *comm must be released
 * with terse_comm_destroy(); split it like any terse communicator.
 */
TERSE_API terse_status_t terse_comm_create_from_mpi(MPI_Comm mpi_comm, terse_comm_t **comm);

#ifdef __cplusplus
}
#endif
#endif
