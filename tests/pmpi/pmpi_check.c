/*
 * pmpi_check.c - an ordinary MPI program that checks libterse_pmpi from the
 * outside: run it under mpirun with the library preloaded (or linked before
 * -lmpi) and without. Every collective result is compared with the MPI's own
 * (PMPI_*, which the library does not intercept): bitwise for integers, min
 * and max and for sums of values whose sum is exact in any order; for other
 * float sums within the reassociation bound and identical on every rank.
 *
 *   pmpi_check exact   types x ops x in-place x sizes x communicators (world,
 *                      dup, split, Cartesian rows), reduce_scatter_block,
 *                      allgather, bcast; the fall-through cases
 *   pmpi_check eb      the error-bounded mode through the terse_compress hint
 *   pmpi_check kill    a rank dies before a large allreduce: the survivors'
 *                      error handler must fire (they print "error-handler: ...")
 *   pmpi_check threads the exact checks after MPI_Init_thread(MPI_THREAD_MULTIPLE)
 *   pmpi_check codec   a learning-style codec (cnat8) through the terse_compress hint
 *
 * PMPI_CHECK_EXPECT=taken asserts (through terse_pmpi_comm_stats, when the
 * library is there) that terse ran the large calls and left the others;
 * PMPI_CHECK_EXPECT=untaken that it ran none (all left to the MPI).
 */
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "terse_pmpi.h"

/* Present when the library is preloaded or linked. */
int terse_pmpi_comm_stats(MPI_Comm comm, terse_pmpi_stats_t *stats) __attribute__((weak));

static int rank, size, failures, checks;

#define CHECK(cond, ...)                                                \
    do {                                                                \
        checks++;                                                       \
        if (!(cond)) {                                                  \
            failures++;                                                 \
            fprintf(stderr, "[rank %d] FAIL %s:%d: ", rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                               \
            fprintf(stderr, "\n");                                      \
        }                                                               \
    } while (0)

typedef struct {
    MPI_Datatype dt;
    const char *name;
    size_t size;
    int is_float;
} dtype_t;

static dtype_t dtypes[6];
static int ndtypes;

static void fill(void *buf, const dtype_t *t, int count, int r, MPI_Op op, int exact)
{
    for (int i = 0; i < count; i++) {
        /* products stay small (+-1, 2); sums of multiples of 1/1024 below 2^12 are exact in float */
        long v = op == MPI_PROD ? ((i + r) % 5 == 0 ? 2 : ((i * 7 + r) % 3 == 0 ? -1 : 1))
                                : (long)((i * 2654435761u + (unsigned)r * 40503u) % 4001u) - 2000;
        if (t->dt == MPI_FLOAT)
            ((float *)buf)[i] = exact || op == MPI_PROD ? (float)v / 1024.0f
                                                        : (float)sin(0.001 * i + r) * 1e3f + (float)v * 1e-3f;
        else if (t->dt == MPI_DOUBLE)
            ((double *)buf)[i] = exact || op == MPI_PROD ? (double)v / 1024.0 : sin(0.001 * i + r) * 1e3 + v * 1e-7;
        else if (t->size == 4)
            ((int32_t *)buf)[i] = (int32_t)(op == MPI_PROD ? v : v * 1000003L + r);
        else
            ((int64_t *)buf)[i] = op == MPI_PROD ? v : v * 1000000007LL * (r + 1);
    }
}

/* Results equal: bitwise, or (inexact float sums) within the reassociation bound. */
static int same(const void *a, const void *b, const dtype_t *t, int count, int exact, double *worst)
{
    if (exact || !t->is_float)
        return memcmp(a, b, (size_t)count * t->size) == 0;
    double w = 0;
    for (int i = 0; i < count; i++) {
        double x = t->size == 4 ? ((const float *)a)[i] : ((const double *)a)[i];
        double y = t->size == 4 ? ((const float *)b)[i] : ((const double *)b)[i];
        double tol = size * (t->size == 4 ? 1.2e-7 : 2.3e-16) * size * 1.1e3;
        if (fabs(x - y) > tol)
            return 0;
        w = fmax(w, fabs(x - y));
    }
    *worst = w;
    return 1;
}

/* The same bytes on every rank of comm. */
static int identical(const void *buf, size_t bytes, MPI_Comm comm)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < bytes; i++)
        h = (h ^ ((const unsigned char *)buf)[i]) * 1099511628211ull;
    unsigned long long v[2] = {h, ~h}, m[2];
    PMPI_Allreduce(v, m, 2, MPI_UNSIGNED_LONG_LONG, MPI_MAX, comm);
    return m[0] == h && m[1] == ~h;
}

static void check_allreduce(MPI_Comm comm, const char *cname)
{
    static const MPI_Op ops[] = {MPI_SUM, MPI_MAX, MPI_MIN, MPI_PROD};
    static const char *opn[] = {"sum", "max", "min", "prod"};
    static const int counts[] = {1, 1000, 70001, 300000};
    int r;
    MPI_Comm_rank(comm, &r);
    for (int d = 0; d < ndtypes; d++)
        for (int o = 0; o < 4; o++)
            for (int c = 0; c < 4; c++)
                for (int inplace = 0; inplace < 2; inplace++)
                    for (int exact = 0; exact < (dtypes[d].is_float && ops[o] == MPI_SUM ? 2 : 1); exact++) {
                        const dtype_t *t = &dtypes[d];
                        int n = counts[c];
                        size_t bytes = (size_t)n * t->size;
                        char *in = malloc(bytes), *out = malloc(bytes), *ref = malloc(bytes);
                        fill(in, t, n, r, ops[o], exact || !t->is_float || ops[o] != MPI_SUM);
                        int ex = exact || !t->is_float || ops[o] != MPI_SUM;
                        PMPI_Allreduce(in, ref, n, t->dt, ops[o], comm);
                        int rc;
                        if (inplace) {
                            memcpy(out, in, bytes);
                            rc = MPI_Allreduce(MPI_IN_PLACE, out, n, t->dt, ops[o], comm);
                        } else {
                            rc = MPI_Allreduce(in, out, n, t->dt, ops[o], comm);
                        }
                        double worst = 0;
                        CHECK(rc == MPI_SUCCESS, "%s allreduce %s %s n=%d returned %d", cname, t->name, opn[o], n, rc);
                        CHECK(same(out, ref, t, n, ex, &worst), "%s allreduce %s %s n=%d inplace=%d exact=%d differs from PMPI",
                              cname, t->name, opn[o], n, inplace, ex);
                        CHECK(identical(out, bytes, comm), "%s allreduce %s %s n=%d: ranks differ", cname, t->name,
                              opn[o], n);
                        free(in), free(out), free(ref);
                    }
}

static void check_movement(MPI_Comm comm, const char *cname)
{
    int r, n;
    MPI_Comm_rank(comm, &r);
    MPI_Comm_size(comm, &n);
    static const int counts[] = {3, 100000, 262144};
    for (int c = 0; c < 3; c++) {
        int k = counts[c];
        /* reduce_scatter_block of int and double, sum, both forms */
        for (int inplace = 0; inplace < 2; inplace++) {
            int *in = malloc((size_t)k * n * sizeof(int)), *out = malloc((size_t)k * n * sizeof(int)),
                *ref = malloc((size_t)k * sizeof(int));
            for (int i = 0; i < k * n; i++)
                in[i] = i * 31 + r * 7;
            PMPI_Reduce_scatter_block(in, ref, k, MPI_INT, MPI_SUM, comm);
            int rc;
            if (inplace) {
                memcpy(out, in, (size_t)k * n * sizeof(int));
                rc = MPI_Reduce_scatter_block(MPI_IN_PLACE, out, k, MPI_INT, MPI_SUM, comm);
            } else {
                rc = MPI_Reduce_scatter_block(in, out, k, MPI_INT, MPI_SUM, comm);
            }
            CHECK(rc == MPI_SUCCESS && !memcmp(out, ref, (size_t)k * sizeof(int)),
                  "%s reduce_scatter_block k=%d inplace=%d", cname, k, inplace);
            free(in), free(out), free(ref);
        }
        /* allgather of doubles and of bytes, both forms */
        for (int inplace = 0; inplace < 2; inplace++) {
            double *mine = malloc((size_t)k * sizeof(double)), *out = malloc((size_t)k * n * sizeof(double)),
                   *ref = malloc((size_t)k * n * sizeof(double));
            for (int i = 0; i < k; i++)
                mine[i] = r * 1e6 + i + 0.25;
            PMPI_Allgather(mine, k, MPI_DOUBLE, ref, k, MPI_DOUBLE, comm);
            int rc;
            if (inplace) {
                memset(out, 0, (size_t)k * n * sizeof(double));
                memcpy(out + (size_t)k * r, mine, (size_t)k * sizeof(double));
                rc = MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, out, k, MPI_DOUBLE, comm);
            } else {
                rc = MPI_Allgather(mine, k, MPI_DOUBLE, out, k, MPI_DOUBLE, comm);
            }
            CHECK(rc == MPI_SUCCESS && !memcmp(out, ref, (size_t)k * n * sizeof(double)),
                  "%s allgather k=%d inplace=%d", cname, k, inplace);
            free(mine), free(out), free(ref);
        }
        /* bcast from the last rank, bytes (odd counts fall through) and floats */
        for (int odd = 0; odd < 2; odd++) {
            int len = k * 4 + odd;
            unsigned char *b = malloc((size_t)len);
            for (int i = 0; i < len; i++)
                b[i] = (unsigned char)(r == n - 1 ? (i * 13 + 5) : 0);
            int rc = MPI_Bcast(b, len, MPI_BYTE, n - 1, comm);
            int okb = rc == MPI_SUCCESS;
            for (int i = 0; i < len && okb; i++)
                okb = b[i] == (unsigned char)(i * 13 + 5);
            CHECK(okb, "%s bcast len=%d", cname, len);
            free(b);
        }
    }
    CHECK(MPI_Barrier(comm) == MPI_SUCCESS, "%s barrier", cname);
}

static void user_sum(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    (void)dt;
    for (int i = 0; i < *len; i++)
        ((float *)inout)[i] += ((float *)in)[i];
}

/* Calls terse must leave to the MPI: the results are the MPI's anyway. */
static int check_fallthrough(MPI_Comm comm)
{
    int k = 300000, calls = 0;
    float *f = malloc((size_t)k * 2 * sizeof(float)), *g = malloc((size_t)k * 2 * sizeof(float)),
          *h = malloc((size_t)k * 2 * sizeof(float));
    for (int i = 0; i < 2 * k; i++)
        f[i] = (float)((i + rank) % 17);
    /* MAXLOC on pairs */
    struct { float v; int i; } *p = malloc((size_t)k * sizeof(*p)), *q = malloc((size_t)k * sizeof(*p)),
                              *pr = malloc((size_t)k * sizeof(*p));
    for (int i = 0; i < k; i++)
        p[i].v = (float)((i * 7 + rank * 3) % 11), p[i].i = rank;
    MPI_Allreduce(p, q, k, MPI_FLOAT_INT, MPI_MAXLOC, comm);
    PMPI_Allreduce(p, pr, k, MPI_FLOAT_INT, MPI_MAXLOC, comm);
    CHECK(!memcmp(q, pr, (size_t)k * sizeof(*p)), "MAXLOC differs");
    calls++;
    /* a user operator */
    MPI_Op op;
    MPI_Op_create(user_sum, 1, &op);
    MPI_Allreduce(f, g, k, MPI_FLOAT, op, comm);
    PMPI_Allreduce(f, h, k, MPI_FLOAT, op, comm);
    CHECK(!memcmp(g, h, (size_t)k * sizeof(float)), "user op differs");
    MPI_Op_free(&op);
    calls++;
    /* a derived type (data movement: reductions need predefined types) */
    MPI_Datatype two;
    MPI_Type_contiguous(2, MPI_FLOAT, &two);
    MPI_Type_commit(&two);
    memcpy(g, f, (size_t)k * 2 * sizeof(float));
    MPI_Bcast(g, k, two, 0, comm);
    memcpy(h, f, (size_t)k * 2 * sizeof(float));
    PMPI_Bcast(h, k, two, 0, comm);
    CHECK(!memcmp(g, h, (size_t)k * 2 * sizeof(float)), "derived type differs");
    MPI_Type_free(&two);
    calls++;
    /* unsigned and bitwise */
    unsigned *u = (unsigned *)f, *v = (unsigned *)g, *w = (unsigned *)h;
    MPI_Allreduce(u, v, k, MPI_UNSIGNED, MPI_MAX, comm);
    PMPI_Allreduce(u, w, k, MPI_UNSIGNED, MPI_MAX, comm);
    CHECK(!memcmp(v, w, (size_t)k * sizeof(unsigned)), "unsigned max differs");
    MPI_Allreduce(u, v, k, MPI_INT, MPI_BXOR, comm);
    PMPI_Allreduce(u, w, k, MPI_INT, MPI_BXOR, comm);
    CHECK(!memcmp(v, w, (size_t)k * sizeof(unsigned)), "bxor differs");
    calls += 2;
    /* small */
    MPI_Allreduce(f, g, 8, MPI_FLOAT, MPI_SUM, comm);
    PMPI_Allreduce(f, h, 8, MPI_FLOAT, MPI_SUM, comm);
    CHECK(!memcmp(g, h, 8 * sizeof(float)), "small sum differs");
    calls++;
    free(f), free(g), free(h), free(p), free(q), free(pr);
    return calls;
}

static void init_types(void)
{
    dtypes[ndtypes++] = (dtype_t){MPI_FLOAT, "float", 4, 1};
    dtypes[ndtypes++] = (dtype_t){MPI_DOUBLE, "double", 8, 1};
    dtypes[ndtypes++] = (dtype_t){MPI_INT, "int", 4, 0};
    dtypes[ndtypes++] = (dtype_t){MPI_LONG, "long", 8, 0};
    dtypes[ndtypes++] = (dtype_t){MPI_INT64_T, "int64_t", 8, 0};
}

static void run_exact(void)
{
    const char *expect = getenv("PMPI_CHECK_EXPECT");
    init_types();
    terse_pmpi_stats_t s0 = {0}, s1 = {0};
    if (terse_pmpi_comm_stats)
        terse_pmpi_comm_stats(MPI_COMM_WORLD, &s0);
    check_allreduce(MPI_COMM_WORLD, "world");
    check_movement(MPI_COMM_WORLD, "world");
    MPI_Comm dup, half, row, cart;
    MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    check_allreduce(dup, "dup");
    MPI_Comm_split(MPI_COMM_WORLD, rank % 2, size - rank, &half);
    check_allreduce(half, "split");
    check_movement(half, "split");
    int dims[2] = {0, 0}, periods[2] = {0, 0}, keep[2] = {0, 1};
    MPI_Dims_create(size, 2, dims);
    MPI_Cart_create(MPI_COMM_WORLD, 2, dims, periods, 1, &cart);
    MPI_Cart_sub(cart, keep, &row);
    check_allreduce(row, "cart-row");
    MPI_Comm dup2;
    MPI_Comm_dup(half, &dup2); /* a dup of a communicator terse has built */
    check_movement(dup2, "dup-of-split");
    MPI_Comm_free(&dup2);
    int fell = check_fallthrough(MPI_COMM_WORLD);
    if (terse_pmpi_comm_stats && expect && !strcmp(expect, "untaken")) {
        terse_pmpi_comm_stats(MPI_COMM_WORLD, &s1);
        CHECK(s1.taken == s0.taken, "terse took %llu calls", (unsigned long long)(s1.taken - s0.taken));
        if (getenv("TERSE_PMPI_STATS"))
            CHECK(s1.fell_through > s0.fell_through + 100, "fall-throughs not counted");
    }
    if (terse_pmpi_comm_stats && expect && !strcmp(expect, "taken")) {
        terse_pmpi_comm_stats(MPI_COMM_WORLD, &s1);
        CHECK(s1.active, "terse is not active");
        CHECK(s1.taken > s0.taken + 20, "terse took only %llu calls on world", (unsigned long long)(s1.taken - s0.taken));
        /* fall-through counting needs TERSE_PMPI_STATS */
        if (getenv("TERSE_PMPI_STATS"))
            CHECK(s1.fell_through >= s0.fell_through + (uint64_t)fell, "fell through %llu < %d",
                  (unsigned long long)(s1.fell_through - s0.fell_through), fell);
        terse_pmpi_stats_t sd;
        terse_pmpi_comm_stats(dup, &sd);
        CHECK(sd.taken > 0, "terse took nothing on the dup");
    }
    MPI_Comm_free(&dup), MPI_Comm_free(&half), MPI_Comm_free(&row), MPI_Comm_free(&cart);
}

/* ---- error-bounded mode ---------------------------------------------------- */

static double field(int x, int y, int z, int r, int kind)
{
    switch (kind) {
    case 0: /* smooth: a few waves, different per rank */
        return 50 * sin(0.05 * x + 0.3 * r) * cos(0.07 * y) + 20 * sin(0.11 * z + r) + 100;
    case 1: /* random in [-1, 1] */
        return (double)(((uint64_t)(x * 73856093u ^ y * 19349663u ^ z * 83492791u ^ (unsigned)r * 2654435761u)) %
                        1000003u) / 500001.5 - 1.0;
    case 2: /* steps: piecewise constant with jumps of 1e3 */
        return ((x / 7 + y / 5 + z / 3 + r) % 4) * 1e3;
    default: /* constant, equal on every rank */
        return 3.25;
    }
}

static void check_eb(void)
{
    const int X = 64, Y = 32, Z = 32, N = X * Y * Z; /* 64 Ki elements: above the compressed-mode minimum */
    const double R[] = {1e-2, 1e-4, 1e-6};
    const char *kinds[] = {"smooth", "random", "steps", "constant"};
    for (int dbl = 0; dbl < 2; dbl++)
        for (int ri = 0; ri < 3; ri++)
            for (int kind = 0; kind < 4; kind++) {
                MPI_Comm c;
                MPI_Comm_dup(MPI_COMM_WORLD, &c);
                MPI_Info info;
                MPI_Info_create(&info);
                char v[64];
                snprintf(v, sizeof(v), "rel:%g,min=64K", R[ri]);
                MPI_Info_set(info, "terse_compress", v);
                MPI_Comm_set_info(c, info);
                MPI_Info_free(&info);
                size_t es = dbl ? 8 : 4;
                char *in = malloc(N * es), *out = malloc(N * es), *all = malloc(N * es * size);
                for (int i = 0; i < N; i++) {
                    double f = field(i % X, (i / X) % Y, i / (X * Y), rank, kind);
                    if (dbl)
                        ((double *)in)[i] = f;
                    else
                        ((float *)in)[i] = (float)f;
                }
                MPI_Datatype dt = dbl ? MPI_DOUBLE : MPI_FLOAT;
                int rc = MPI_Allreduce(in, out, N, dt, MPI_SUM, c);
                CHECK(rc == MPI_SUCCESS, "eb allreduce returned %d", rc);
                PMPI_Allgather(in, N * (int)es, MPI_BYTE, all, N * (int)es, MPI_BYTE, c);
                double lo = INFINITY, hi = -INFINITY, worst = 0;
                for (size_t i = 0; i < (size_t)N * size; i++) {
                    double x = dbl ? ((double *)all)[i] : ((float *)all)[i];
                    lo = fmin(lo, x), hi = fmax(hi, x);
                }
                double bound = R[ri] * (hi - lo);
                int bad = 0;
                for (int i = 0; i < N; i++) {
                    long double ex = 0;
                    for (int p = 0; p < size; p++)
                        ex += dbl ? (long double)((double *)all)[(size_t)p * N + i] : ((float *)all)[(size_t)p * N + i];
                    double got = dbl ? ((double *)out)[i] : ((float *)out)[i];
                    double err = (double)fabsl((long double)got - ex);
                    worst = fmax(worst, err);
                    if (kind != 3 && err > bound)
                        bad++;
                }
                terse_pmpi_stats_t st = {0};
                if (terse_pmpi_comm_stats)
                    terse_pmpi_comm_stats(c, &st);
                if (kind == 3) {
                    /* a constant field has range 0: no relative bound can hold; exact from the MPI */
                    double ref0 = 3.25 * size;
                    CHECK((dbl ? ((double *)out)[0] : ((float *)out)[0]) == ref0, "constant field not exact");
                    CHECK(!terse_pmpi_comm_stats || st.compressed == 0, "constant field was compressed");
                } else {
                    CHECK(bad == 0, "%s %s rel:%g: %d elements beyond the bound %.3g (worst %.3g)", kinds[kind],
                          dbl ? "double" : "float", R[ri], bad, bound, worst);
                    if (terse_pmpi_comm_stats && getenv("PMPI_CHECK_EXPECT")) {
                        CHECK(st.compressed == 1, "%s rel:%g not compressed", kinds[kind], R[ri]);
                        CHECK(st.max_error <= bound * (1 + 1e-12) && worst <= st.max_error * (1 + 1e-9) + 1e-300,
                              "reported max error %.3g, bound %.3g, seen %.3g", st.max_error, bound, worst);
                        if (rank == 0)
                            printf("eb %-6s %-6s rel:%-6g bound %.3g worst %.3g reported %.3g ratio %.2f\n",
                                   dbl ? "double" : "float", kinds[kind], R[ri], bound, worst, st.max_error, st.ratio);
                    }
                }
                CHECK(identical(out, N * es, c), "eb results differ between ranks");
                free(in), free(out), free(all);
                MPI_Comm_free(&c);
            }
    /* NaN: refused by the bound, the MPI's own sum (NaN where it is) */
    MPI_Comm c;
    MPI_Comm_dup(MPI_COMM_WORLD, &c);
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "terse_compress", "abs:1e-3,min=64K");
    MPI_Comm_set_info(c, info);
    MPI_Info_free(&info);
    int n = 1 << 17;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
    for (int i = 0; i < n; i++)
        a[i] = (float)(i % 100);
    if (rank == size - 1)
        a[12345] = NAN;
    MPI_Allreduce(a, b, n, MPI_FLOAT, MPI_SUM, c);
    PMPI_Allreduce(a, ref, n, MPI_FLOAT, MPI_SUM, c);
    CHECK(isnan(b[12345]) && b[1] == ref[1] && b[n - 1] == ref[n - 1], "NaN input not left to the MPI");
    MPI_Comm_free(&c);
    free(a), free(b), free(ref);
}

/* ---- a learning-style codec: unbiased, no bound, the same on every rank ---- */

static void check_codec(void)
{
    MPI_Comm c;
    MPI_Comm_dup(MPI_COMM_WORLD, &c);
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "terse_compress", "cnat8,min=64K");
    MPI_Comm_set_info(c, info);
    MPI_Info_free(&info);
    int n = 300000;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *ref = malloc(n * sizeof(float));
    for (int i = 0; i < n; i++)
        a[i] = (float)(sin(0.001 * i + rank) + 1.5);
    for (int step = 0; step < 3; step++) {
        CHECK(MPI_Allreduce(a, b, n, MPI_FLOAT, MPI_SUM, c) == MPI_SUCCESS, "codec allreduce");
        PMPI_Allreduce(a, ref, n, MPI_FLOAT, MPI_SUM, c);
        /* C_nat rounds a value to a neighbouring power of two (within a factor 2),
         * unbiased; the ranks' codes are rounded once and the owner's sum once
         * more (two-phase), so positive sums stay within a factor 4 and the mean
         * error is small */
        int out = 0, same = 0;
        double mean = 0;
        for (int i = 0; i < n; i++) {
            out += !(b[i] >= 0.25f * ref[i] && b[i] <= 4.0f * ref[i]);
            same += b[i] == ref[i];
            mean += (b[i] - ref[i]) / ref[i];
        }
        mean /= n;
        CHECK(out == 0, "codec: %d values beyond a factor 4 of the sum", out);
        CHECK(same < n / 2, "codec: %d of %d values exact - was it compressed?", same, n);
        CHECK(fabs(mean) < 0.01, "codec: mean relative error %.4f (biased?)", mean);
        CHECK(identical(b, n * sizeof(float), c), "codec: ranks differ");
    }
    /* a double sum is not for the float codec: exact */
    double *d = malloc(n * sizeof(double)), *e = malloc(n * sizeof(double)), *f = malloc(n * sizeof(double));
    for (int i = 0; i < n; i++)
        d[i] = i % 7 + rank;
    MPI_Allreduce(d, e, n, MPI_DOUBLE, MPI_SUM, c);
    PMPI_Allreduce(d, f, n, MPI_DOUBLE, MPI_SUM, c);
    CHECK(!memcmp(e, f, n * sizeof(double)), "codec mode changed a double sum");
    terse_pmpi_stats_t st = {0};
    if (terse_pmpi_comm_stats && getenv("PMPI_CHECK_EXPECT")) {
        terse_pmpi_comm_stats(c, &st);
        CHECK(st.compressed == 3 && st.ratio > 3, "codec: %llu compressed calls, ratio %.2f",
              (unsigned long long)st.compressed, st.ratio);
    }
    MPI_Comm_free(&c);
    free(a), free(b), free(ref), free(d), free(e), free(f);
}

/* ---- a dead peer ------------------------------------------------------------- */

static void check_kill(void)
{
    int n = 1 << 22;
    float *a = calloc(n, sizeof(float));
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Allreduce(MPI_IN_PLACE, a, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); /* everyone connected */
    if (rank == size - 1)
        raise(SIGKILL);
    int rc = MPI_Allreduce(MPI_IN_PLACE, a, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    printf("error-handler: rank %d got %s: %s\n", rank, rc == MPI_SUCCESS ? "success" : "an error", msg);
    fflush(stdout);
    /* launchers may kill the survivors or drop their output once a rank died:
     * a file per survivor is the record the test counts */
    const char *dir = getenv("PMPI_CHECK_KILL_DIR");
    if (dir) {
        char path[512];
        snprintf(path, sizeof(path), "%s/rank%d", dir, rank);
        FILE *f = fopen(path, "w");
        if (f) {
            fprintf(f, "rank %d got %s: %s\n", rank, rc == MPI_SUCCESS ? "success" : "an error", msg);
            fclose(f);
        }
    }
    _exit(rc == MPI_SUCCESS ? 1 : 0);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "exact";
    int provided;
    if (!strcmp(mode, "threads"))
        MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    else
        MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (!strcmp(mode, "kill"))
        check_kill();
    else if (!strcmp(mode, "eb"))
        check_eb();
    else if (!strcmp(mode, "codec"))
        check_codec();
    else
        run_exact();
    int f = failures, all = 0;
    PMPI_Allreduce(&f, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("pmpi_check %s, %d ranks: %d checks, %d failed%s\n", mode, size, checks, all,
               terse_pmpi_comm_stats ? " (libterse_pmpi loaded)" : " (plain MPI)");
    MPI_Finalize();
    return all ? 1 : 0;
}
