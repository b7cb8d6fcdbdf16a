/* test_unit.c - single-process unit tests: statuses, config parsing, 16-bit
 * float conversion, reduction kernels, argument checking. */
#include "terse_config.h"
#include "topology.h"
#include "dtype.h"
#include "terse.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_status_strings(void)
{
    CU_ASSERT_STRING_EQUAL(terse_strerror(TERSE_OK), "success");
    CU_ASSERT_PTR_NOT_NULL(strstr(terse_strerror(TERSE_ERR_MEMLOCK), "ulimit -l"));
    CU_ASSERT_STRING_EQUAL(terse_strerror((terse_status_t)-999), "unknown status");
    /* every status in the list has its own message */
#define CHECK_(name, value, msg) CU_ASSERT_STRING_EQUAL(terse_strerror(name), msg);
    TERSE_STATUS_LIST(CHECK_)
#undef CHECK_
    CU_ASSERT_STRING_EQUAL(terse_version(), "0.2.0");
}

static void test_dtype_tables(void)
{
    CU_ASSERT_EQUAL(terse_dtype_size(TERSE_FLOAT32), 4);
    CU_ASSERT_EQUAL(terse_dtype_size(TERSE_FLOAT64), 8);
    CU_ASSERT_EQUAL(terse_dtype_size(TERSE_FLOAT16), 2);
    CU_ASSERT_EQUAL(terse_dtype_size(TERSE_BFLOAT16), 2);
    CU_ASSERT_EQUAL(terse_dtype_size(TERSE_INT32), 4);
    CU_ASSERT_EQUAL(terse_dtype_size(TERSE_INT64), 8);
    CU_ASSERT_EQUAL(terse_dtype_size((terse_dtype_t)99), 0);
    CU_ASSERT_STRING_EQUAL(terse_dtype_name(TERSE_BFLOAT16), "bfloat16");
    CU_ASSERT_STRING_EQUAL(terse_op_name(TERSE_AVG), "avg");
    CU_ASSERT_STRING_EQUAL(terse_op_name((terse_op_t)-1), "invalid");
}

static void test_parse_size(void)
{
    size_t v;
    CU_ASSERT(terse__parse_size("123", &v) == 0 && v == 123);
    CU_ASSERT(terse__parse_size("64K", &v) == 0 && v == 65536);
    CU_ASSERT(terse__parse_size("4M", &v) == 0 && v == 4u << 20);
    CU_ASSERT(terse__parse_size("1GiB", &v) == 0 && v == 1u << 30);
    CU_ASSERT(terse__parse_size("", &v) != 0);
    CU_ASSERT(terse__parse_size("-4", &v) != 0);
    CU_ASSERT(terse__parse_size("12Q", &v) != 0);
}

static void test_config_env(void)
{
    terse_config_t c;
    setenv("TERSE_TIMEOUT", "2.5", 1);
    setenv("TERSE_CHUNK_SIZE", "64K", 1);
    setenv("TERSE_SLOTS", "banana", 1); /* bad value: default kept */
    terse__config_load(&c);
    CU_ASSERT_DOUBLE_EQUAL(c.timeout_sec, 2.5, 1e-12);
    CU_ASSERT_EQUAL(c.chunk_size, 65536);
    CU_ASSERT_EQUAL(c.slots, 8);
    unsetenv("TERSE_TIMEOUT");
    unsetenv("TERSE_CHUNK_SIZE");
    unsetenv("TERSE_SLOTS");
    terse__config_load(&c);
    CU_ASSERT_DOUBLE_EQUAL(c.timeout_sec, 60, 1e-12);
    CU_ASSERT_STRING_EQUAL(c.transport, "auto");
    CU_ASSERT_EQUAL(c.chunk_size, 0); /* the transport's default */

    /* the knob listing names every variable with its help */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    terse_config_print(f);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "TERSE_TIMEOUT"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "TERSE_DEBUG_SUBSYS"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "default="));
    free(text);
}

static void test_launcher_env(void)
{
    terse_launch_env_t e;
    setenv("OMPI_COMM_WORLD_RANK", "3", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "8", 1);
    setenv("SLURM_PROCID", "1", 1);
    setenv("SLURM_NTASKS", "2", 1);
    terse__config_launch_env(&e);
    CU_ASSERT_EQUAL(e.rank, 3); /* OMPI wins over SLURM */
    CU_ASSERT_EQUAL(e.size, 8);
    CU_ASSERT_STRING_EQUAL(e.source, "OMPI");
    unsetenv("OMPI_COMM_WORLD_RANK");
    unsetenv("OMPI_COMM_WORLD_SIZE");
    terse__config_launch_env(&e);
    CU_ASSERT_EQUAL(e.rank, 1);
    CU_ASSERT_STRING_EQUAL(e.source, "SLURM");
    unsetenv("SLURM_PROCID");
    unsetenv("SLURM_NTASKS");
    setenv("RANK", "2", 1);
    setenv("WORLD_SIZE", "4", 1);
    setenv("MASTER_ADDR", "10.0.0.1", 1);
    setenv("MASTER_PORT", "29500", 1);
    terse__config_launch_env(&e);
    CU_ASSERT_EQUAL(e.rank, 2);
    CU_ASSERT_STRING_EQUAL(e.source, "TORCHRUN");
    CU_ASSERT_STRING_EQUAL(e.master, "10.0.0.1:29500");
    unsetenv("RANK");
    unsetenv("WORLD_SIZE");
    unsetenv("MASTER_ADDR");
    unsetenv("MASTER_PORT");
    terse__config_launch_env(&e);
    CU_ASSERT_EQUAL(e.rank, -1);
}

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static void test_half(void)
{
    /* every finite half survives the round trip through float exactly */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = terse__half_to_float((uint16_t)h);
        if (isnan(f))
            bad += !isnan(terse__half_to_float(terse__float_to_half(f)));
        else
            bad += terse__float_to_half(f) != h;
    }
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(terse__float_to_half(1.0f), 0x3c00);
    CU_ASSERT_EQUAL(terse__float_to_half(65504.0f), 0x7bff);
    CU_ASSERT_EQUAL(terse__float_to_half(70000.0f), 0x7c00); /* overflow -> inf */
    CU_ASSERT_EQUAL(terse__float_to_half(-0.0f), 0x8000);
    CU_ASSERT_EQUAL(terse__float_to_half(0x1p-24f), 0x0001);   /* smallest subnormal */
    CU_ASSERT_EQUAL(terse__float_to_half(0x1p-26f), 0x0000);   /* rounds to zero */
    /* ties to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10 */
    CU_ASSERT_EQUAL(terse__float_to_half(1.0f + 0x1p-11f), 0x3c00);
    CU_ASSERT_EQUAL(terse__float_to_half(1.0f + 3 * 0x1p-11f), 0x3c02);
    /* bf16 */
    CU_ASSERT_EQUAL(terse__float_to_bf16(1.0f), 0x3f80);
    CU_ASSERT_EQUAL(terse__float_to_bf16(1.0f + 0x1p-8f), 0x3f80);       /* tie -> even */
    CU_ASSERT_EQUAL(terse__float_to_bf16(1.0f + 3 * 0x1p-8f), 0x3f82);   /* tie -> even (up) */
    CU_ASSERT(isnan(terse__bf16_to_float(terse__float_to_bf16(NAN))));
    CU_ASSERT_EQUAL(f2u(terse__bf16_to_float(0x3f80)), f2u(1.0f));
}

/* The array conversions (F16C, vectorised bf16) give the scalar functions'
 * bits for every half value and a sweep of float32 that includes every
 * rounding boundary of fp16 and bf16, NaNs, infinities, subnormals; and the
 * 16-bit reductions built on them equal element-by-element reduction. */
static void test_half_arrays(void)
{
    enum { N = 1 << 16 };
    static float f[4 * N], back[4 * N];
    static uint16_t h[4 * N], h2[4 * N];
    long bad = 0;
    for (int simd = 1; simd >= 0; simd--) {
        terse__dtype_set_simd(simd);
        for (uint32_t i = 0; i < N; i++)
            h[i] = (uint16_t)i;
        terse__half_to_float_n(back, h, N);
        for (uint32_t i = 0; i < N; i++)
            bad += f2u(back[i]) != f2u(terse__half_to_float((uint16_t)i));
        terse__bf16_to_float_n(back, h, N);
        for (uint32_t i = 0; i < N; i++)
            bad += f2u(back[i]) != f2u(terse__bf16_to_float((uint16_t)i));
        /* floats: every 16-bit pattern as the high half, with low halves at and
         * around both rounding points (fp16 drops 13 bits, bf16 16) */
        static const uint32_t lows[] = {0x0000, 0x0fff, 0x1000, 0x1001, 0x7fff, 0x8000, 0x8001, 0xffff};
        for (size_t l = 0; l < sizeof(lows) / sizeof(lows[0]); l += 4) {
            for (uint32_t i = 0; i < N; i++)
                for (int j = 0; j < 4; j++)
                    f[4 * i + (uint32_t)j] = u2f(i << 16 | lows[l + (size_t)j]);
            terse__float_to_half_n(h2, f, 4 * N);
            for (uint32_t i = 0; i < 4 * N; i++)
                bad += h2[i] != terse__float_to_half(f[i]);
            terse__float_to_bf16_n(h2, f, 4 * N);
            for (uint32_t i = 0; i < 4 * N; i++)
                bad += h2[i] != terse__float_to_bf16(f[i]);
        }
        /* sums over both 16-bit types against per-element arithmetic (odd length: tails) */
        for (int t = 0; t < 2; t++) {
            terse_dtype_t dt = t ? TERSE_BFLOAT16 : TERSE_FLOAT16;
            uint16_t (*to)(float) = t ? terse__float_to_bf16 : terse__float_to_half;
            float (*from)(uint16_t) = t ? terse__bf16_to_float : terse__half_to_float;
            size_t n = 1037;
            uint16_t a[1037], b[1037], d[1037];
            for (size_t i = 0; i < n; i++)
                a[i] = to((float)i * 0.37f - 100), b[i] = to(1.0f / (1.0f + (float)i));
            memcpy(d, a, sizeof(d));
            terse__reduce(dt, TERSE_SUM, d, b, n, 1);
            for (size_t i = 0; i < n; i++)
                bad += d[i] != to(from(b[i]) + from(a[i]));
            terse__reduce3(dt, TERSE_PROD, d, a, b, n, 0);
            for (size_t i = 0; i < n; i++)
                bad += d[i] != to(from(a[i]) * from(b[i]));
            memcpy(d, a, sizeof(d));
            terse__scale_avg(dt, d, n, 3);
            for (size_t i = 0; i < n; i++)
                bad += d[i] != to(from(a[i]) / 3.0f);
        }
    }
    terse__dtype_set_simd(1);
    CU_ASSERT_EQUAL(bad, 0);
}

static void test_reduce_kernels(void)
{
    float a[4] = {1, -0.0f, NAN, 3}, b[4] = {2, 0.0f, 1, -3};
    float x[4], y[4];
    /* min is symmetric, -0 < +0, NaN wins */
    memcpy(x, a, sizeof(x));
    terse__reduce(TERSE_FLOAT32, TERSE_MIN, x, b, 4, 0);
    memcpy(y, b, sizeof(y));
    terse__reduce(TERSE_FLOAT32, TERSE_MIN, y, a, 4, 0);
    CU_ASSERT_EQUAL(memcmp(x, y, sizeof(x)), 0);
    CU_ASSERT_EQUAL(x[0], 1);
    CU_ASSERT(signbit(x[1]));
    CU_ASSERT(isnan(x[2]));
    CU_ASSERT_EQUAL(x[3], -3);
    memcpy(x, a, sizeof(x));
    terse__reduce(TERSE_FLOAT32, TERSE_MAX, x, b, 4, 0);
    CU_ASSERT(!signbit(x[1]));
    CU_ASSERT_EQUAL(x[3], 3);

    int32_t i1[3] = {INT32_MAX, -7, 5}, i2[3] = {1, 2, -5};
    terse__reduce(TERSE_INT32, TERSE_SUM, i1, i2, 3, 0);
    CU_ASSERT_EQUAL(i1[0], INT32_MIN); /* wraps, no UB */
    CU_ASSERT_EQUAL(i1[1], -5);
    terse__scale_avg(TERSE_INT32, i1 + 1, 1, 2);
    CU_ASSERT_EQUAL(i1[1], -2); /* truncates toward zero */

    uint16_t h1[2] = {terse__float_to_half(1.5f), terse__float_to_half(2)};
    uint16_t h2[2] = {terse__float_to_half(2.25f), terse__float_to_half(3)};
    terse__reduce(TERSE_FLOAT16, TERSE_PROD, h1, h2, 2, 1);
    CU_ASSERT_EQUAL(terse__half_to_float(h1[0]), 3.375f);
    CU_ASSERT_EQUAL(terse__half_to_float(h1[1]), 6.0f);

    double d[2] = {1, 2}, e[2] = {0.5, 0.25};
    terse__reduce(TERSE_FLOAT64, TERSE_AVG, d, e, 2, 0);
    terse__scale_avg(TERSE_FLOAT64, d, 2, 2);
    CU_ASSERT_DOUBLE_EQUAL(d[0], 0.75, 0);
    CU_ASSERT_DOUBLE_EQUAL(d[1], 1.125, 0);
}

/* Argument checking without any network: a one-rank communicator. */
static void test_invalid_args(void)
{
    terse_comm_t *comm = NULL;
    terse_comm_params_t p = {.rank = 0, .size = 1};
    CU_ASSERT_EQUAL(terse_comm_create(&p, NULL), TERSE_ERR_INVALID_ARG);
    terse_comm_params_t bad = {.rank = 2, .size = 2, .root_addr = "127.0.0.1:1"};
    CU_ASSERT_EQUAL(terse_comm_create(&bad, &comm), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(comm);
    terse_comm_params_t badroot = {.rank = 0, .size = 2, .root_addr = "no-port-here"};
    CU_ASSERT_EQUAL(terse_comm_create(&badroot, &comm), TERSE_ERR_INVALID_ARG);
    terse_comm_params_t badtp = {.rank = 0, .size = 1, .transport = "carrier-pigeon"};
    CU_ASSERT_EQUAL(terse_comm_create(&badtp, &comm), TERSE_ERR_UNSUPPORTED);

    CU_ASSERT_EQUAL_FATAL(terse_comm_create(&p, &comm), TERSE_OK);
    CU_ASSERT_EQUAL(terse_comm_size(comm), 1);
    CU_ASSERT_STRING_EQUAL(terse_comm_transport(comm), "tcp");
    float x[4] = {1, 2, 3, 4}, y[4];
    CU_ASSERT_EQUAL(terse_allreduce(NULL, x, y, 4, TERSE_FLOAT32, TERSE_SUM), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_allreduce(comm, x, y, 4, (terse_dtype_t)17, TERSE_SUM), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_allreduce(comm, x, y, 4, TERSE_FLOAT32, (terse_op_t)-2), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_allreduce(comm, NULL, y, 4, TERSE_FLOAT32, TERSE_SUM), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_allreduce(comm, x, NULL, 4, TERSE_FLOAT32, TERSE_SUM), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_allreduce(comm, NULL, NULL, 0, TERSE_FLOAT32, TERSE_SUM), TERSE_OK);
    CU_ASSERT_EQUAL(terse_allreduce(comm, x, y, (size_t)1 << 62, TERSE_FLOAT32, TERSE_SUM), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_broadcast(comm, x, y, 4, TERSE_FLOAT32, 1), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_broadcast(comm, x, y, 4, TERSE_FLOAT32, -1), TERSE_ERR_INVALID_ARG);
    size_t counts[1] = {3};
    CU_ASSERT_EQUAL(terse_allgatherv(comm, x, 4, y, counts, NULL, TERSE_FLOAT32), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_allgatherv(comm, x, 4, y, NULL, NULL, TERSE_FLOAT32), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(terse_request_wait(NULL), TERSE_ERR_INVALID_ARG);
    int done;
    CU_ASSERT_EQUAL(terse_request_test(NULL, &done), TERSE_ERR_INVALID_ARG);
    /* the valid calls still work on one rank */
    CU_ASSERT_EQUAL(terse_allreduce(comm, x, y, 4, TERSE_FLOAT32, TERSE_AVG), TERSE_OK);
    CU_ASSERT_EQUAL(y[3], 4);
    CU_ASSERT_EQUAL(terse_barrier(comm), TERSE_OK);
    const char *detail;
    CU_ASSERT_EQUAL(terse_comm_error(comm, &detail), TERSE_OK);
    CU_ASSERT_EQUAL(terse_comm_destroy(comm), TERSE_OK);
    CU_ASSERT_EQUAL(terse_comm_destroy(NULL), TERSE_ERR_INVALID_ARG);
}

static void test_topology(void)
{
    /* unknown devices have no locality; allocations work with or without hwloc */
    CU_ASSERT_EQUAL(terse__topo_nic_score("no-such-device"), 0);
    size_t len = 3 * 4096 + 5;
    char *p = terse__topo_alloc("no-such-device", len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL((uintptr_t)p % 4096, 0);
    memset(p, 0x5a, len);
    CU_ASSERT_EQUAL(p[len - 1], 0x5a);
    terse__topo_free(p, len);
    p = terse__topo_alloc(NULL, 100);
    CU_ASSERT_PTR_NOT_NULL(p);
    terse__topo_free(p, 100);
}

static void test_no_identity(void)
{
    /* no parameters and no launcher variables: a clear error, not a guess */
    terse_comm_t *comm = NULL;
    unsetenv("TERSE_RANK");
    unsetenv("TERSE_SIZE");
    CU_ASSERT_EQUAL(terse_comm_create_from_env(&comm), TERSE_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(comm);
}

int main(void)
{
    /* This suite must not see a launcher's variables. */
    static const char *strip[] = {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE",
                                  "SLURM_PROCID", "SLURM_NTASKS", "RANK", "WORLD_SIZE"};
    for (size_t i = 0; i < sizeof(strip) / sizeof(strip[0]); i++)
        unsetenv(strip[i]);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite("unit", NULL, NULL);
    CU_add_test(s, "status strings", test_status_strings);
    CU_add_test(s, "dtype tables", test_dtype_tables);
    CU_add_test(s, "size parsing", test_parse_size);
    CU_add_test(s, "configuration from the environment", test_config_env);
    CU_add_test(s, "launcher variables", test_launcher_env);
    CU_add_test(s, "float16 and bfloat16 conversion", test_half);
    CU_add_test(s, "16-bit array conversions and reductions = scalar", test_half_arrays);
    CU_add_test(s, "reduction kernels", test_reduce_kernels);
    CU_add_test(s, "invalid arguments", test_invalid_args);
    CU_add_test(s, "no rank or size anywhere", test_no_identity);
    CU_add_test(s, "topology and NIC-local allocation", test_topology);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failures = (int)CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
