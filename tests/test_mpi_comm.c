/*
 * test_mpi_comm.c - terse_comm_create_from_mpi under mpirun: the terse
 * communicator (bootstrapped through MPI_Allgather) matches MPI's ranks, and
 * terse's allreduce, allgather and broadcast - on it and on a split of it -
 * agree with MPI's on the same data. Exit status 0 on success.
 */
#include "terse_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond, ...)                                                           \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "rank %d: FAILED %s:%d: %s: ", rank, __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                          \
            fputc('\n', stderr);                                                   \
            failed++;                                                              \
        } else {                                                                   \
            passed++;                                                              \
        }                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size, passed = 0, failed = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    terse_comm_t *comm = NULL;
    terse_status_t st = terse_comm_create_from_mpi(MPI_COMM_WORLD, &comm);
    CHECK(st == TERSE_OK, "create_from_mpi: %s", terse_strerror(st));
    if (st == TERSE_OK) {
        CHECK(terse_comm_rank(comm) == rank && terse_comm_size(comm) == size, "rank/size differ from MPI");
        enum { N = 100003 };
        double *x = malloc(N * sizeof(double)), *a = malloc(N * sizeof(double)), *b = malloc(N * sizeof(double));
        for (int i = 0; i < N; i++)
            x[i] = (double)((rank * 31 + i) % 97) - 48;
        CHECK(terse_allreduce(comm, x, a, N, TERSE_FLOAT64, TERSE_SUM) == TERSE_OK, "allreduce");
        MPI_Allreduce(x, b, N, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        CHECK(memcmp(a, b, N * sizeof(double)) == 0, "terse and MPI allreduce differ");
        int mine = rank * rank + 1, *all = malloc(sizeof(int) * (size_t)size);
        CHECK(terse_allgather(comm, &mine, all, 1, TERSE_INT32) == TERSE_OK, "allgather");
        for (int r = 0; r < size; r++)
            CHECK(all[r] == r * r + 1, "allgather[%d] = %d", r, all[r]);
        long v = rank == size - 1 ? 4242 : 0;
        CHECK(terse_broadcast(comm, &v, &v, 1, TERSE_INT64, size - 1) == TERSE_OK, "broadcast");
        CHECK(v == 4242, "broadcast got %ld", v);
        /* a split on the shared context against MPI_Comm_split */
        terse_comm_t *half = NULL;
        MPI_Comm mhalf;
        CHECK(terse_comm_split(comm, rank % 2, -rank, &half) == TERSE_OK && half, "terse_comm_split");
        MPI_Comm_split(MPI_COMM_WORLD, rank % 2, -rank, &mhalf);
        int hr;
        MPI_Comm_rank(mhalf, &hr);
        CHECK(half && terse_comm_rank(half) == hr, "split rank %d, MPI's %d", terse_comm_rank(half), hr);
        if (half) {
            CHECK(terse_allreduce(half, x, a, N, TERSE_FLOAT64, TERSE_SUM) == TERSE_OK, "allreduce on the split");
            MPI_Allreduce(x, b, N, MPI_DOUBLE, MPI_SUM, mhalf);
            CHECK(memcmp(a, b, N * sizeof(double)) == 0, "terse and MPI allreduce differ on the split");
            terse_comm_destroy(half);
        }
        MPI_Comm_free(&mhalf);
        free(x), free(a), free(b), free(all);
        CHECK(terse_comm_destroy(comm) == TERSE_OK, "destroy");
    }
    CHECK(terse_comm_create_from_mpi(MPI_COMM_WORLD, NULL) == TERSE_ERR_INVALID_ARG, "NULL out-param");
    int tot[2] = {passed, failed}, sum[2];
    MPI_Reduce(tot, sum, 2, MPI_INT, MPI_SUM, 0, MPI_COMM_WORLD);
    if (rank == 0)
        printf("test_mpi_comm: %d passed, %d failed\n", sum[0], sum[1]);
    MPI_Finalize();
    return failed ? 1 : 0;
}
