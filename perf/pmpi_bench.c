/*
 * pmpi_bench - an OSU-style MPI_Allreduce latency/bandwidth sweep, written as
 * an ordinary MPI program so the same binary runs with and without
 * libterse_pmpi (perf/pmpi.sh runs both, interleaved, and prints the ratio).
 *
 *   pmpi_bench [-b MIN] [-e MAX] [-f FACTOR] [-t float|double|int] [-d ramp|smooth|images]
 *   pmpi_bench -O            the cost of a call the library leaves to the MPI
 *
 * Rank 0 prints "dtype bytes time_us busbw_GBps wrong max_error ratio" per
 * size: the median of 5 timed batches (each clamp(256 MiB / bytes, 10, 1000)
 * calls after warm-ups; from 16 MiB 3 single calls), the bus bandwidth 2 (n-1)/n bytes / time (nccl-tests'
 * convention), the number of wrong elements, and - under an error-bounded mode
 * (TERSE_PMPI_COMPRESS=rel:R) - the largest error seen against a float64
 * reference and the compression ratio terse reports. "wrong" counts elements
 * off by more than the bound (exact modes: by anything).
 *
 * Data: ramp (small integers: exact in any summation order), smooth (a 3-D
 * field of a few waves per rank, the kind of data error-bounded compressors
 * target), images (the Fashion-MNIST training images, a real data set, one
 * slice per rank; needs dataset-fashion-mnist).
 */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "terse_pmpi.h"

int terse_pmpi_comm_stats(MPI_Comm comm, terse_pmpi_stats_t *stats) __attribute__((weak));

static int rank, size;

static unsigned char *images(size_t *n)
{
    gzFile f = gzopen("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "rb");
    if (!f)
        return NULL;
    unsigned char hdr[16];
    size_t cap = 60000u * 784u;
    unsigned char *p = malloc(cap);
    if (gzread(f, hdr, 16) != 16 || !p || gzread(f, p, (unsigned)cap) != (int)cap) {
        gzclose(f);
        free(p);
        return NULL;
    }
    gzclose(f);
    *n = cap;
    return p;
}

static void fill(void *buf, size_t count, MPI_Datatype dt, const char *data)
{
    static unsigned char *img;
    static size_t nimg;
    if (!strcmp(data, "images") && !img && !(img = images(&nimg))) {
        if (rank == 0)
            fprintf(stderr, "pmpi_bench: SKIP images: /usr/share/datasets/fashion-mnist is missing "
                            "(apt-get install dataset-fashion-mnist)\n");
        MPI_Abort(MPI_COMM_WORLD, 77);
    }
    size_t side = (size_t)cbrt((double)count) + 1;
    for (size_t i = 0; i < count; i++) {
        double v;
        if (!strcmp(data, "smooth")) {
            size_t x = i % side, y = (i / side) % side, z = i / (side * side);
            v = 100 + 50 * sin(0.031 * x + 0.7 * rank) * cos(0.023 * y) + 30 * sin(0.017 * z + rank) +
                5 * sin(0.2 * (x + y));
        } else if (!strcmp(data, "images")) {
            v = img[(i + (size_t)rank * 784u * 7919u) % nimg] / 255.0;
        } else {
            v = (double)((rank + i % 13) % 5);
        }
        if (dt == MPI_FLOAT)
            ((float *)buf)[i] = (float)v;
        else if (dt == MPI_DOUBLE)
            ((double *)buf)[i] = v;
        else
            ((int *)buf)[i] = (int)v;
    }
}

static double at(const void *buf, size_t i, MPI_Datatype dt)
{
    return dt == MPI_FLOAT ? ((const float *)buf)[i] : dt == MPI_DOUBLE ? ((const double *)buf)[i]
                                                                         : ((const int *)buf)[i];
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void overhead(void)
{
    /* MPI_COMM_SELF, one element: below any threshold, so the library only decides */
    const long iters = 2000000;
    float a = 1, b;
    unsigned u = 1, v;
    double t[2][5];
    for (int rep = 0; rep < 5; rep++) {
        double t0 = MPI_Wtime();
        for (long i = 0; i < iters; i++)
            MPI_Allreduce(&a, &b, 1, MPI_FLOAT, MPI_SUM, MPI_COMM_SELF);
        t[0][rep] = (MPI_Wtime() - t0) / iters * 1e9;
        t0 = MPI_Wtime();
        for (long i = 0; i < iters; i++)
            MPI_Allreduce(&u, &v, 1, MPI_UNSIGNED, MPI_MAX, MPI_COMM_SELF);
        t[1][rep] = (MPI_Wtime() - t0) / iters * 1e9;
    }
    qsort(t[0], 5, sizeof(double), cmp);
    qsort(t[1], 5, sizeof(double), cmp);
    if (rank == 0)
        printf("overhead small_float_ns %.1f unsigned_ns %.1f (median of 5 x %ld calls)\n", t[0][2], t[1][2], iters);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    size_t minb = 4, maxb = 256u << 20, factor = 4;
    const char *type = "float", *data = "ramp";
    int opt, over = 0;
    while ((opt = getopt(argc, argv, "b:e:f:t:d:O")) != -1) {
        switch (opt) {
        case 'b': minb = strtoull(optarg, NULL, 10); break;
        case 'e': maxb = strtoull(optarg, NULL, 10); break;
        case 'f': factor = strtoull(optarg, NULL, 10); break;
        case 't': type = optarg; break;
        case 'd': data = optarg; break;
        case 'O': over = 1; break;
        default:
            if (rank == 0)
                fprintf(stderr, "usage: pmpi_bench [-b MIN] [-e MAX] [-f F] [-t float|double|int] "
                                "[-d ramp|smooth|images] | -O\n");
            MPI_Finalize();
            return 2;
        }
    }
    if (over) {
        overhead();
        MPI_Finalize();
        return 0;
    }
    MPI_Datatype dt = !strcmp(type, "double") ? MPI_DOUBLE : !strcmp(type, "int") ? MPI_INT : MPI_FLOAT;
    size_t es = dt == MPI_FLOAT || dt == MPI_INT ? 4 : 8;
    if (minb < es)
        minb = es;
    char *in = malloc(maxb), *out = malloc(maxb);
    double *din = malloc(maxb / es * sizeof(double)), *ref = malloc(maxb / es * sizeof(double));
    if (!in || !out || !din || !ref)
        MPI_Abort(MPI_COMM_WORLD, 1);
    if (rank == 0)
        printf("# dtype bytes time_us busbw_GBps wrong max_error ratio (%d ranks, data %s)\n", size, data);
    for (size_t b = minb; b <= maxb; b *= factor) {
        int count = (int)(b / es);
        fill(in, (size_t)count, dt, data);
        long iters = (long)((256u << 20) / b);
        iters = iters < 10 ? 10 : iters > 1000 ? 1000 : iters;
        int big = b >= (16u << 20), batches = big ? 3 : 5;
        if (big)
            iters = 1; /* seconds per call on a slow link: three timed calls */
        for (int i = 0; i < (big ? 1 : 2); i++)
            MPI_Allreduce(in, out, count, dt, MPI_SUM, MPI_COMM_WORLD);
        double t[5];
        for (int rep = 0; rep < batches; rep++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            for (long i = 0; i < iters; i++)
                MPI_Allreduce(in, out, count, dt, MPI_SUM, MPI_COMM_WORLD);
            double el = (MPI_Wtime() - t0) / (double)iters;
            PMPI_Allreduce(&el, &t[rep], 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        }
        qsort(t, (size_t)batches, sizeof(double), cmp);
        /* check the last result against a float64 reference (the MPI's own) */
        for (int i = 0; i < count; i++)
            din[i] = at(in, (size_t)i, dt);
        PMPI_Allreduce(din, ref, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        terse_pmpi_stats_t st = {0};
        if (terse_pmpi_comm_stats)
            terse_pmpi_comm_stats(MPI_COMM_WORLD, &st);
        double worst = 0, bound = st.compressed ? st.bound : 0;
        long wrong = 0;
        for (int i = 0; i < count; i++) {
            double got = at(out, (size_t)i, dt), err = fabs(got - ref[i]);
            /* exact modes: the float sum of these data is exact for ramp; otherwise allow
             * the reassociation of n float32 (or float64) additions */
            double tol = bound > 0 ? bound * (1 + 1e-9)
                         : !strcmp(data, "ramp") ? 0 : size * (es == 4 ? 6e-8 : 1.2e-16) * fabs(ref[i]) * 2;
            worst = fmax(worst, err);
            wrong += err > tol;
        }
        long wall;
        PMPI_Allreduce(&wrong, &wall, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
        if (rank == 0)
            printf("%s %zu %.2f %.3f %ld %.3g %.2f\n", type, b, t[batches / 2] * 1e6,
                   (double)b / t[batches / 2] / 1e9 * 2.0 * (size - 1) / size, wall, worst, st.compressed ? st.ratio : 1.0);
        fflush(stdout);
    }
    free(in), free(out), free(din), free(ref);
    MPI_Finalize();
    return 0;
}
