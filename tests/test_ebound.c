/*
 * test_ebound.c - the error-bounded allreduce (terse_eb_allreduce) and its
 * integer code packing, without MPI: frames round-trip every value up to
 * 2^53 and refuse malformed bytes; on 1-8 ranks, float and double, absolute
 * and relative bounds, smooth, random and step data, every element of the
 * result is within the bound of the exact sum (a long-double reference each
 * rank computes from every rank's regenerated input), the reported error
 * bound covers what is seen, results are the same on every rank; refusals
 * are the same everywhere and leave the communicator usable (NaN on one
 * rank, mismatched bounds, a constant field, a bound below precision, bad
 * arguments). Also the TERSE_PMPI_COMPRESS / terse_compress parser. Over each
 * transport in TERSE_TEST_TRANSPORTS.
 */
#include "../lib/ebound/ebpack.h"
#include "../lib/pmpi/terse_compress_spec.h"
#include "launcher.h"
#include "testutil.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *g_transport = "tcp";

static terse_status_t mk(const terse_launch_ctx_t *ctx, terse_comm_t **comm)
{
    terse_comm_params_t p = TERSE_COMM_PARAMS_INIT;
    p.rank = ctx->rank, p.size = ctx->size, p.root_addr = ctx->root, p.secret = ctx->secret;
    p.transport = g_transport, p.timeout_sec = 60, p.boot_timeout_sec = 120;
    return terse_comm_create(&p, comm);
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---- packing --------------------------------------------------------------- */

static void t_pack(void)
{
    int64_t v[TERSE_EB_FRAME], w[TERSE_EB_FRAME];
    uint8_t buf[TERSE_EB_FRAME * 8 + 64];
    int bad = 0;
    for (int trial = 0; trial < 2000 && !bad; trial++) {
        int n = 1 + (int)(mix((uint64_t)trial) % TERSE_EB_FRAME);
        int bits = (int)(mix((uint64_t)trial * 3 + 1) % 54); /* values below 2^bits in magnitude */
        int64_t x = 0;
        for (int i = 0; i < n; i++) {
            uint64_t r = mix((uint64_t)trial * 1000 + (uint64_t)i);
            /* smooth runs, random values and the extremes */
            if (trial % 3 == 0)
                x += (int64_t)(r % 7) - 3;
            else
                x = bits ? (int64_t)(r % (1ull << bits)) - (int64_t)(1ull << (bits ? bits - 1 : 0)) : 0;
            if (trial % 11 == 0)
                x = (i % 2 ? 1 : -1) * ((int64_t)1 << 53) + (i % 2 ? -1 : 1);
            v[i] = x;
        }
        size_t len = terse__eb_pack_frame(v, n, buf);
        CU_ASSERT(len <= terse__eb_pack_bound((size_t)n));
        const uint8_t *end = terse__eb_unpack_frame(buf, buf + len, n, w);
        if (end != buf + len || memcmp(v, w, (size_t)n * sizeof(int64_t))) {
            fprintf(stderr, "  frame %d (n %d, bits %d) does not round-trip\n", trial, n, bits);
            bad = 1;
        }
        /* any truncation is refused, never read past */
        if (len > 2)
            CU_ASSERT_PTR_NULL(terse__eb_unpack_frame(buf, buf + len - 1 - (size_t)(trial % 3), n, w));
    }
    CU_ASSERT_FALSE(bad);
    /* a width beyond 56, a varint that never ends, a wrong count */
    uint8_t junk[16] = {57, 0};
    CU_ASSERT_PTR_NULL(terse__eb_unpack_frame(junk, junk + sizeof(junk), 4, w));
    memset(junk, 0xff, sizeof(junk));
    junk[0] = 3;
    CU_ASSERT_PTR_NULL(terse__eb_unpack_frame(junk, junk + sizeof(junk), 4, w));
    CU_ASSERT_PTR_NULL(terse__eb_unpack_frame(buf, buf + sizeof(buf), 0, w));
    CU_ASSERT_PTR_NULL(terse__eb_unpack_frame(buf, buf + sizeof(buf), TERSE_EB_FRAME + 1, w));
}

/* ---- the allreduce ----------------------------------------------------------- */

enum { N_ELEM = 20011 }; /* not a multiple of the rank counts or the frame */

static double value(int kind, int rank, int i)
{
    switch (kind) {
    case 0: return 40 * sin(0.01 * i + rank) + 7 * cos(0.13 * i) + 1000;           /* smooth, offset */
    case 1: return ((double)(mix((uint64_t)rank * 1000003u + (uint64_t)i) >> 11) * 0x1p-53 - 0.5) * 1e-3; /* random */
    default: return ((i / 97 + rank) % 3) * 250.0 - 300;                            /* steps */
    }
}

static void fill(void *buf, int dbl, int kind, int rank)
{
    for (int i = 0; i < N_ELEM; i++) {
        double v = value(kind, rank, i);
        if (dbl)
            ((double *)buf)[i] = v;
        else
            ((float *)buf)[i] = (float)v;
    }
}

static int body_bound(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size;
    static const double rel[] = {1e-2, 1e-4, 1e-6};
    for (int dbl = 0; dbl < 2; dbl++)
        for (int kind = 0; kind < 3; kind++)
            for (int b = 0; b < 4; b++) {
                size_t es = dbl ? 8 : 4;
                char *in = malloc(N_ELEM * es), *out = malloc(N_ELEM * es), *other = malloc(N_ELEM * es);
                fill(in, dbl, kind, ctx->rank);
                /* the exact sum and the range, from every rank's input */
                long double *ex = calloc(N_ELEM, sizeof(long double));
                double lo = INFINITY, hi = -INFINITY;
                for (int r = 0; r < n; r++) {
                    fill(other, dbl, kind, r);
                    for (int i = 0; i < N_ELEM; i++) {
                        double v = dbl ? ((double *)other)[i] : ((float *)other)[i];
                        ex[i] += v;
                        lo = fmin(lo, v), hi = fmax(hi, v);
                    }
                }
                terse_eb_mode_t mode = b < 3 ? TERSE_EB_REL : TERSE_EB_ABS;
                double bound = b < 3 ? rel[b] : 0.05, E = b < 3 ? bound * (hi - lo) : bound;
                terse_eb_info_t info;
                int inplace = (kind + b) % 2;
                if (inplace)
                    memcpy(out, in, N_ELEM * es);
                terse_status_t st = terse_eb_allreduce(c, inplace ? out : in, out, N_ELEM,
                                                       dbl ? TERSE_FLOAT64 : TERSE_FLOAT32, mode, bound, &info);
                /* float32 cannot hold a bound below its rounding at the sum's magnitude (documented) */
                double maxabs = fmax(fabs(lo), fabs(hi));
                if (!dbl && ldexp(1.0, -24) * (n * maxabs + E) >= E) {
                    RCHECK(ctx, st == TERSE_ERR_UNSUPPORTED, "float bound %.3g below precision at %g: %s", E,
                           n * maxabs, terse_strerror(st));
                    free(in), free(out), free(other), free(ex);
                    continue;
                }
                RCHECK(ctx, st == TERSE_OK, "%s kind %d bound %g: %s", dbl ? "double" : "float", kind, bound,
                       terse_strerror(st));
                double worst = 0;
                for (int i = 0; i < N_ELEM; i++) {
                    double got = dbl ? ((double *)out)[i] : ((float *)out)[i];
                    worst = fmax(worst, (double)fabsl((long double)got - ex[i]));
                }
                RCHECK(ctx, worst <= E, "%s kind %d mode %d bound %g: error %.3g beyond %.3g", dbl ? "double" : "float",
                       kind, mode, bound, worst, E);
                RCHECK(ctx, fabs(info.bound - E) <= 1e-12 * E, "info.bound %.6g, want %.6g", info.bound, E);
                RCHECK(ctx, info.max_error <= E && worst <= info.max_error * (1 + 1e-12),
                       "reported %.3g, seen %.3g, bound %.3g", info.max_error, worst, E);
                RCHECK(ctx, info.ratio > (kind == 0 && b == 0 ? 3 : 1), "ratio %.2f (kind %d, bound %g)", info.ratio,
                       kind, bound);
                RCHECK(ctx, test_same_everywhere(c, out, N_ELEM * es), "ranks differ");
                free(in), free(out), free(other), free(ex);
            }
    terse_comm_destroy(c);
    return 0;
}

static int body_refusals(const terse_launch_ctx_t *ctx, void *arg)
{
    (void)arg;
    terse_comm_t *c;
    RCHECK(ctx, mk(ctx, &c) == TERSE_OK, "create");
    int n = ctx->size, me = ctx->rank;
    float a[5000], out[5000];
    for (int i = 0; i < 5000; i++)
        a[i] = (float)(i % 10), out[i] = -7;
    /* NaN on the last rank only: INVALID_ARG everywhere, the output untouched */
    float keep = a[77];
    if (me == n - 1)
        a[77] = NAN;
    terse_status_t st = terse_eb_allreduce(c, a, out, 5000, TERSE_FLOAT32, TERSE_EB_ABS, 1e-3, NULL);
    RCHECK(ctx, st == TERSE_ERR_INVALID_ARG, "NaN: %s", terse_strerror(st));
    RCHECK(ctx, out[0] == -7 && out[4999] == -7, "output written on a refusal");
    a[77] = keep;
    /* a different bound on one rank */
    st = terse_eb_allreduce(c, a, out, 5000, TERSE_FLOAT32, TERSE_EB_ABS, me == 0 ? 1e-3 : 2e-3, NULL);
    RCHECK(ctx, n == 1 ? st == TERSE_OK : st == TERSE_ERR_MISMATCH, "mismatched bound: %s", terse_strerror(st));
    /* a different count */
    st = terse_eb_allreduce(c, a, out, me == 0 ? 4000 : 5000, TERSE_FLOAT32, TERSE_EB_ABS, 1e-3, NULL);
    RCHECK(ctx, n == 1 ? st == TERSE_OK : st == TERSE_ERR_MISMATCH, "mismatched count: %s", terse_strerror(st));
    /* a constant field under a relative bound; a bound the output cannot hold */
    float k[5000];
    for (int i = 0; i < 5000; i++)
        k[i] = 3.5f;
    RCHECK(ctx, terse_eb_allreduce(c, k, out, 5000, TERSE_FLOAT32, TERSE_EB_REL, 1e-3, NULL) == TERSE_ERR_UNSUPPORTED,
           "constant field");
    RCHECK(ctx, terse_eb_allreduce(c, a, out, 5000, TERSE_FLOAT32, TERSE_EB_ABS, 1e-9, NULL) == TERSE_ERR_UNSUPPORTED,
           "bound below float precision");
    /* bad arguments on one rank: refused on all */
    st = terse_eb_allreduce(c, a, out, 5000, TERSE_FLOAT32, me == 0 ? (terse_eb_mode_t)9 : TERSE_EB_ABS, 1e-3, NULL);
    RCHECK(ctx, st == TERSE_ERR_INVALID_ARG, "bad mode: %s", terse_strerror(st));
    RCHECK(ctx, terse_eb_allreduce(c, a, out, 5000, TERSE_INT32, TERSE_EB_ABS, 1, NULL) == TERSE_ERR_INVALID_ARG,
           "int32");
    RCHECK(ctx, terse_eb_allreduce(c, a, out, 5000, TERSE_FLOAT32, TERSE_EB_ABS, -1, NULL) == TERSE_ERR_INVALID_ARG,
           "negative bound");
    RCHECK(ctx, terse_eb_allreduce(NULL, a, out, 5000, TERSE_FLOAT32, TERSE_EB_ABS, 1, NULL) == TERSE_ERR_INVALID_ARG,
           "NULL comm");
    /* zero elements, and the communicator still works */
    RCHECK(ctx, terse_eb_allreduce(c, a, out, 0, TERSE_FLOAT32, TERSE_EB_ABS, 1e-3, NULL) == TERSE_OK, "count 0");
    RCHECK(ctx, terse_eb_allreduce(c, a, out, 5000, TERSE_FLOAT32, TERSE_EB_ABS, 1e-3, NULL) == TERSE_OK, "after");
    for (int i = 0; i < 5000; i++)
        RCHECK(ctx, fabsf(out[i] - (float)(n * (i % 10))) <= 1e-3f, "after: out[%d] = %g", i, out[i]);
    terse_comm_destroy(c);
    return 0;
}

static void run(int n, terse_rank_fn fn)
{
    int codes[16];
    if (terse_launch(n, 240, fn, NULL, codes) < 0)
        return;
    for (int r = 0; r < n; r++) {
        if (codes[r])
            fprintf(stderr, "  %d ranks over %s: rank %d exited with %d\n", n, g_transport, r, codes[r]);
        CU_ASSERT_EQUAL(codes[r], 0);
    }
}

static void t_bound(void)
{
    static const int sizes[] = {1, 2, 3, 5, 8};
    int quick = getenv("TERSE_TEST_QUICK") != NULL;
    for (int i = 0; i < (quick ? 3 : 5); i++)
        run(sizes[i], body_bound);
}

static void t_refusals(void)
{
    run(1, body_refusals);
    run(3, body_refusals);
}

static void t_spec(void)
{
    terse_compress_spec_t s;
    char buf[96];
    CU_ASSERT(terse__compress_spec_parse("rel:1e-4", &s) == 0 && s.kind == TERSE_CZ_REL && s.bound == 1e-4 &&
              s.min_bytes == TERSE_CZ_MIN_DEFAULT);
    CU_ASSERT(terse__compress_spec_parse("abs:0.5,min=64K", &s) == 0 && s.kind == TERSE_CZ_ABS && s.bound == 0.5 &&
              s.min_bytes == 65536);
    CU_ASSERT(terse__compress_spec_parse("cnat8,min=2M", &s) == 0 && s.kind == TERSE_CZ_CODEC &&
              !strcmp(s.codec, "cnat8") && s.min_bytes == 2u << 20);
    CU_ASSERT(terse__compress_spec_parse("none", &s) == 0 && s.kind == TERSE_CZ_NONE);
    terse__compress_spec_parse("rel:0.001,min=1K", &s);
    terse__compress_spec_format(&s, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "rel:0.001,min=1024");
    static const char *bad[] = {"rel:", "rel:0", "rel:-1", "rel:2", "abs:nan", "abs:inf", "abs:1e-3,max=4",
                                "abs:1e-3,min=x", "topk", "sign", "abs:1e-3 ", "randk", ""};
    for (size_t i = 0; i + 1 < sizeof(bad) / sizeof(bad[0]); i++) {
        s.kind = TERSE_CZ_ABS, s.bound = 42;
        CU_ASSERT(terse__compress_spec_parse(bad[i], &s) == -1 && s.bound == 42);
        if (terse__compress_spec_parse(bad[i], &s) != -1)
            fprintf(stderr, "  '%s' was accepted\n", bad[i]);
    }
    CU_ASSERT(terse__compress_spec_parse(NULL, &s) == -1);
}

static void add(CU_pSuite s, const char *name, CU_TestFunc fn)
{
    const char *f = getenv("TERSE_TEST_FILTER");
    if (!f || !*f || strstr(name, f))
        CU_add_test(s, name, fn);
}

int main(void)
{
    const char *list = getenv("TERSE_TEST_TRANSPORTS");
    static char buf[128];
    snprintf(buf, sizeof(buf), "%s", list && *list ? list : "tcp");
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    int failures = 0;
    CU_pSuite local = CU_add_suite("error-bounded codes", NULL, NULL);
    add(local, "frames round-trip every value to 2^53; malformed bytes refused", t_pack);
    add(local, "TERSE_PMPI_COMPRESS / terse_compress modes parsed, bad ones refused", t_spec);
    CU_basic_run_suite(local);
    failures += (int)CU_get_number_of_tests_failed();
    for (char *save, *tp = strtok_r(buf, ",", &save); tp; tp = strtok_r(NULL, ",", &save)) {
        g_transport = tp;
        char name[64];
        snprintf(name, sizeof(name), "error-bounded allreduce over %s", tp);
        CU_pSuite s = CU_add_suite(name, NULL, NULL);
        add(s, "bound on every element, float/double, abs/rel, smooth/random/steps (1-8 ranks)", t_bound);
        add(s, "NaN, mismatches, constant field, below precision, bad arguments: refused alike", t_refusals);
        CU_basic_run_suite(s);
        failures += (int)CU_get_number_of_tests_failed();
    }
    CU_cleanup_registry();
    return failures ? 1 : 0;
}
