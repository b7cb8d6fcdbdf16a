/*
 * mpi_allreduce_bench - MPI_Allreduce float32 sum sweep, the Open MPI column
 * of perf/compare.sh. Prints "bytes busbw_GBps time_us wrong" per size on rank 0.
 *   mpirun -n 4 mpi_allreduce_bench MINBYTES MAXBYTES FACTOR
 * Iterations per size: clamp(256 MiB / bytes, 5, 200) after 2 warm-ups, the
 * same rule terse_perf -i 0 and the Gloo bench use.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    size_t minb = argc > 1 ? strtoull(argv[1], NULL, 10) : 4096;
    size_t maxb = argc > 2 ? strtoull(argv[2], NULL, 10) : (256u << 20);
    size_t f = argc > 3 ? strtoull(argv[3], NULL, 10) : 4;
    float *in = malloc(maxb), *out = malloc(maxb);
    for (size_t b = minb; b <= maxb; b *= f) {
        int count = (int)(b / 4);
        for (int i = 0; i < count; i++)
            in[i] = (float)((rank + i % 13) % 5);
        long iters = (long)((256u << 20) / b);
        iters = iters < 5 ? 5 : iters > 200 ? 200 : iters;
        for (int i = 0; i < 2; i++)
            MPI_Allreduce(in, out, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        for (long i = 0; i < iters; i++)
            MPI_Allreduce(in, out, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        double el = (MPI_Wtime() - t0) / (double)iters, tmax;
        MPI_Reduce(&el, &tmax, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
        long wrong = 0;
        for (int i = 0; i < count; i++) {
            double want = 0;
            for (int r = 0; r < n; r++)
                want += (r + i % 13) % 5;
            wrong += out[i] != (float)want;
        }
        if (rank == 0)
            printf("%zu %.3f %.1f %ld\n", b, (double)b / tmax / 1e9 * 2.0 * (n - 1) / n, tmax * 1e6, wrong);
        fflush(stdout);
    }
    free(in);
    free(out);
    MPI_Finalize();
    return 0;
}
