/*
 * terse_perf - nccl-tests-style sweep of a terse collective.
 *
 *   terse_perf -n 4 -b 8 -e 256M -f 2            4 local ranks (forked)
 *   mpirun -n 4 terse_perf -b 8 -e 256M -f 2     one rank per MPI process
 *   terse_perf --config                          every TERSE_* knob
 *
 * Columns: size (bytes), count (elements), type, redop, time (us, slowest
 * rank, mean over iterations), algbw = size/time, busbw = algbw * factor
 * (allreduce 2(n-1)/n, allgather and reduce_scatter (n-1)/n, broadcast 1),
 * #wrong = elements that differ from the exact expected result.
 */
#include "launcher.h"
#include "terse.h"

#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    size_t minb, maxb;
    double factor;
    int warmup, iters, check, nranks, reg;
    terse_dtype_t dtype;
    terse_op_t op;
    const char *coll;
    const char *transport;
    const char *codec;  /* -z: compressed allreduce with this codec */
    const char *algo;   /* -a: its algorithm */
    int feedback;       /* -E: worker error feedback */
    double density;     /* -k: sparse_allreduce pairs per rank / n */
} opts_t;

/* The persistent handles a size needs (compressed or sparse runs). */
typedef struct {
    terse_compressed_t *cz;
    terse_sparse_t *sp;
    uint32_t *sidx;
    float *sval;
    size_t sk;
} special_t;

static const char *algo_names[] = {"auto", "allgather", "two_phase", "ring"};


static int parse_size(const char *s, size_t *out)
{
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'K': case 'k': v *= 1024; end++; break;
    case 'M': case 'm': v *= 1024 * 1024; end++; break;
    case 'G': case 'g': v *= 1024.0 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end || v < 0)
        return -1;
    *out = (size_t)v;
    return 0;
}

/* Integer-valued data keeps results exact in every dtype for the check. */
static double pattern(int rank, size_t i) { return (double)((rank + (int)(i % 13)) % 5); }

static void fill(terse_dtype_t dt, void *buf, size_t n, int rank)
{
    for (size_t i = 0; i < n; i++) {
        double v = pattern(rank, i);
        switch (dt) {
        case TERSE_FLOAT32: ((float *)buf)[i] = (float)v; break;
        case TERSE_FLOAT64: ((double *)buf)[i] = v; break;
        case TERSE_INT32: ((int32_t *)buf)[i] = (int32_t)v; break;
        case TERSE_INT64: ((int64_t *)buf)[i] = (int64_t)v; break;
        default: { /* small integers: same bits in float16 and bfloat16 upper half */
            float f = (float)v;
            uint32_t u;
            memcpy(&u, &f, 4);
            if (dt == TERSE_BFLOAT16)
                ((uint16_t *)buf)[i] = (uint16_t)(u >> 16);
            else
                ((uint16_t *)buf)[i] = v == 0 ? 0 : (uint16_t)(((((u >> 23) & 0xff) - 112) << 10) | ((u >> 13) & 0x3ff));
        }
        }
    }
}

static double get(terse_dtype_t dt, const void *buf, size_t i)
{
    switch (dt) {
    case TERSE_FLOAT32: return ((const float *)buf)[i];
    case TERSE_FLOAT64: return ((const double *)buf)[i];
    case TERSE_INT32: return ((const int32_t *)buf)[i];
    case TERSE_INT64: return (double)((const int64_t *)buf)[i];
    case TERSE_BFLOAT16: {
        uint32_t u = (uint32_t)((const uint16_t *)buf)[i] << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    default: {
        uint16_t h = ((const uint16_t *)buf)[i];
        if (!(h & 0x7fff))
            return 0;
        int e = (h >> 10) & 0x1f;
        double m = 1 + (h & 0x3ff) / 1024.0;
        return ((h & 0x8000) ? -1 : 1) * ldexp(m, e - 15);
    }
    }
}

static double expected(const opts_t *o, int n, int block_rank, size_t i)
{
    if (!strcmp(o->coll, "allgather") || !strcmp(o->coll, "broadcast"))
        return pattern(block_rank, i);
    double acc = pattern(0, i);
    for (int r = 1; r < n; r++) {
        double v = pattern(r, i);
        acc = o->op == TERSE_PROD ? acc * v : o->op == TERSE_MIN ? fmin(acc, v) : o->op == TERSE_MAX ? fmax(acc, v) : acc + v;
    }
    if (o->op == TERSE_AVG)
        acc = (o->dtype == TERSE_INT32 || o->dtype == TERSE_INT64) ? trunc(acc / n) : acc / n;
    return acc;
}

static terse_status_t run_once(terse_comm_t *comm, const opts_t *o, void *in, void *out, size_t count,
                               const special_t *sx)
{
    if (sx->cz)
        return terse_compressed_allreduce(sx->cz, in, out);
    if (sx->sp)
        return terse_sparse_allreduce(sx->sp, sx->sidx, sx->sval, sx->sk, out);
    if (!strcmp(o->coll, "allreduce"))
        return terse_allreduce(comm, in, out, count, o->dtype, o->op);
    if (!strcmp(o->coll, "allgather"))
        return terse_allgather(comm, in, out, count, o->dtype);
    if (!strcmp(o->coll, "reduce_scatter"))
        return terse_reduce_scatter(comm, in, out, count, o->dtype, o->op);
    return terse_broadcast(comm, in, out, count, o->dtype, 0);
}

static int body(const terse_launch_ctx_t *ctx, void *arg)
{
    const opts_t *o = arg;
    terse_comm_t *comm;
    terse_comm_params_t p = {.rank = ctx->rank, .size = ctx->size, .root_addr = ctx->root,
                             .secret = ctx->secret, .transport = o->transport};
    terse_status_t st = terse_comm_create(&p, &comm); /* an empty root: the launcher's default */
    if (st != TERSE_OK) {
        fprintf(stderr, "terse_perf: rank %d: communicator: %s\n", ctx->rank, terse_strerror(st));
        return 1;
    }
    int n = terse_comm_size(comm), me = terse_comm_rank(comm);
    size_t esz = terse_dtype_size(o->dtype);
    int gather = !strcmp(o->coll, "allgather"), rs = !strcmp(o->coll, "reduce_scatter");
    int sparse = !strcmp(o->coll, "sparse_allreduce");
    double busf = !strcmp(o->coll, "allreduce") || sparse ? 2.0 * (n - 1) / n
                  : (gather || rs) ? (double)(n - 1) / n : 1.0;
    /* "size" is the whole result (allreduce/broadcast/allgather output, reduce_scatter input), as in nccl-tests */
    size_t maxcount = o->maxb / esz;
    char *in = aligned_alloc(4096, (maxcount * esz + 4096) & ~(size_t)4095);
    char *out = aligned_alloc(4096, (maxcount * esz + 4096) & ~(size_t)4095);
    if (!in || !out) {
        fprintf(stderr, "terse_perf: out of memory for %zu bytes\n", o->maxb);
        return 1;
    }
    terse_memreg_t *rin = NULL, *rout = NULL;
    if (o->reg && (terse_mem_register(comm, in, maxcount * esz, &rin) != TERSE_OK ||
                   terse_mem_register(comm, out, maxcount * esz, &rout) != TERSE_OK)) {
        fprintf(stderr, "terse_perf: rank %d: cannot register the buffers\n", me);
        return 1;
    }
    if (me == 0) {
        if (o->iters)
            printf("# terse_perf: %s, %d ranks, transport %s, %d warm-up + %d timed iterations\n",
                   o->coll, n, terse_comm_transport(comm), o->warmup, o->iters);
        else
            printf("# terse_perf: %s, %d ranks, transport %s, %d warm-up + clamp(256M/size, 5, 200) "
                   "timed iterations\n", o->coll, n, terse_comm_transport(comm), o->warmup);
        if (o->codec)
            printf("# compressed allreduce, codec %s, error feedback %d; #wrong counts ranks whose "
                   "output differs; sent = payload bytes per call of rank 0, ratio = sent / dense ring\n",
                   o->codec, o->feedback);
        if (sparse)
            printf("# sparse allreduce, %.4g of the values per rank; #wrong counts ranks whose output "
                   "differs; sent = payload bytes per call of rank 0, ratio = sent / dense ring\n",
                   o->density);
        printf("#%12s %12s %9s %7s %10s %8s %8s %7s%s\n", "size", "count", "type", "redop", "time",
               "algbw", "busbw", "#wrong", o->codec || sparse ? "         sent  ratio algo" : "");
        printf("#%12s %12s %9s %7s %10s %8s %8s %7s%s\n", "(B)", "(elements)", "", "", "(us)", "(GB/s)",
               "(GB/s)", "", o->codec || sparse ? "          (B)" : "");
        fflush(stdout);
    }
    int fail = 0;
    for (size_t bytes = o->minb; bytes <= o->maxb; bytes = (size_t)((double)bytes * o->factor) > bytes ? (size_t)((double)bytes * o->factor) : bytes + 1) {
        size_t total = bytes / esz;
        size_t count = (gather || rs) ? total / (size_t)n : total; /* per-rank argument */
        if (gather || rs)
            total = count * (size_t)n;
        size_t incount = gather ? count : total;
        fill(o->dtype, in, incount, me);
        /* -i 0: clamp(256 MiB / size, 5, 200) iterations, as the peer benches do */
        int iters = o->iters;
        if (iters == 0) {
            size_t k = ((size_t)256 << 20) / (bytes ? bytes : 1);
            iters = k < 5 ? 5 : k > 200 ? 200 : (int)k;
        }
        special_t sx = {0};
        terse_compressed_t *cz = NULL;
        if (sparse) {
            /* k = density x n distinct indices per rank, spread with a rank-dependent offset */
            size_t k = (size_t)(o->density * (double)total);
            k = k < 1 ? 1 : k > total ? total : k;
            size_t stride = total / k;
            sx.sidx = malloc(k * sizeof(uint32_t));
            sx.sval = malloc(k * sizeof(float));
            for (size_t j = 0; j < k; j++) {
                sx.sidx[j] = (uint32_t)(j * stride + (size_t)(me * 7919) % stride);
                sx.sval[j] = (float)pattern(me, j) - 2.0f;
            }
            sx.sk = k;
            if (!sx.sidx || !sx.sval || (st = terse_sparse_create(comm, total, NULL, &sx.sp)) != TERSE_OK) {
                fprintf(stderr, "terse_perf: rank %d: sparse allreduce: %s\n", me, terse_strerror(st));
                fail = 1;
                break;
            }
        }
        if (o->codec) {
            terse_compressed_params_t cp;
            terse_compressed_params_init(&cp);
            cp.codec = o->codec;
            cp.error_feedback = o->feedback;
            cp.op = o->op;
            for (int a = 0; a < 4; a++)
                if (o->algo && !strcmp(o->algo, algo_names[a]))
                    cp.algo = (terse_compressed_algo_t)a;
            if ((st = terse_compressed_create(comm, total, &cp, &sx.cz)) != TERSE_OK) {
                fprintf(stderr, "terse_perf: rank %d: compressed allreduce: %s\n", me, terse_strerror(st));
                fail = 1;
                break;
            }
            cz = sx.cz;
        }
        for (int i = 0; i < o->warmup; i++)
            if ((st = run_once(comm, o, in, out, count, &sx)) != TERSE_OK)
                break;
        if (st == TERSE_OK)
            st = terse_barrier(comm);
        double t0 = terse_launch_now();
        for (int i = 0; i < iters && st == TERSE_OK; i++)
            st = run_once(comm, o, in, out, count, &sx);
        double el = (terse_launch_now() - t0) / iters;
        if (st != TERSE_OK) {
            const char *d;
            terse_comm_error(comm, &d);
            fprintf(stderr, "terse_perf: rank %d: %s failed: %s (%s)\n", me, o->coll, terse_strerror(st), d);
            fail = 1;
            break;
        }
        /* slowest rank defines the time */
        double tmax;
        terse_allreduce(comm, &el, &tmax, 1, TERSE_FLOAT64, TERSE_MAX);
        int64_t wrong = 0;
        terse_compressed_stats_t zs = {0};
        if (cz || sx.sp) {
            /* lossy (or sparse): check that every rank holds the same bits instead */
            if (cz)
                terse_compressed_stats(cz, &zs);
            if (sx.sp) {
                terse_sparse_stats_t ss;
                terse_sparse_stats(sx.sp, &ss);
                zs.bytes_sent = ss.calls ? ss.bytes_sent / ss.calls : 0;
                zs.dense_bytes = n > 1 ? 2 * (uint64_t)(n - 1) * 4 * total / (uint64_t)n : 0;
                zs.ratio = zs.dense_bytes ? (double)zs.bytes_sent / (double)zs.dense_bytes : 0;
                zs.algorithm = ss.dense_sends ? "dense" : "sparse";
            }
            uint64_t h = 1469598103934665603ull;
            for (size_t i = 0; i < total * esz; i++)
                h = (h ^ (unsigned char)out[i]) * 1099511628211ull;
            int64_t hv = (int64_t)h, hmin, hmax;
            terse_allreduce(comm, &hv, &hmin, 1, TERSE_INT64, TERSE_MIN);
            terse_allreduce(comm, &hv, &hmax, 1, TERSE_INT64, TERSE_MAX);
            wrong = hmin != hmax;
            terse_compressed_destroy(cz);
            terse_sparse_destroy(sx.sp);
            free(sx.sidx), free(sx.sval);
        } else if (o->check) {
            fill(o->dtype, in, incount, me);
            memset(out, 0, (rs ? count : total) * esz);
            run_once(comm, o, in, out, count, &sx);
            size_t nout = rs ? count : total;
            for (size_t i = 0; i < nout; i++) {
                size_t gi = rs ? (size_t)me * count + i : i;
                double want = gather ? expected(o, n, (int)(i / (count ? count : 1)), i % (count ? count : 1))
                                     : expected(o, n, 0, gi);
                wrong += get(o->dtype, out, i) != want;
            }
            int64_t w = wrong;
            terse_allreduce(comm, &w, &wrong, 1, TERSE_INT64, TERSE_SUM);
        }
        if (me == 0) {
            double sz = (double)(total * esz);
            printf(" %12zu %12zu %9s %7s %10.1f %8.2f %8.2f %7lld", total * esz, total,
                   terse_dtype_name(o->dtype), (gather || !strcmp(o->coll, "broadcast")) ? "none" : terse_op_name(o->op),
                   tmax * 1e6, sz / tmax / 1e9, sz / tmax / 1e9 * busf, (long long)wrong);
            if (o->codec || sparse)
                printf(" %12llu %6.3f %s", (unsigned long long)zs.bytes_sent, zs.ratio, zs.algorithm);
            printf("\n");
            fflush(stdout);
        }
        fail |= wrong != 0;
    }
    terse_comm_stats_t cs;
    terse_comm_stats(comm, &cs);
    if (me == 0)
        printf("# rank 0: %llu calls, %llu bytes sent, %llu registrations, %llu chunk sends from "
               "registered memory (zero-copy on verbs), %llu from unregistered memory (bounce-copied on verbs)\n", (unsigned long long)cs.calls,
               (unsigned long long)cs.bytes_sent, (unsigned long long)cs.reg_created,
               (unsigned long long)cs.reg_hits, (unsigned long long)cs.reg_misses);
    if (rin)
        terse_mem_deregister(comm, rin);
    if (rout)
        terse_mem_deregister(comm, rout);
    terse_comm_destroy(comm);
    free(in);
    free(out);
    return fail;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: terse_perf [-n ranks] [-b minbytes] [-e maxbytes] [-f factor] [-w warmup]\n"
            "                  [-i iters (0: auto)] [-d float32|float64|float16|bfloat16|int32|int64]\n"
            "                  [-o sum|prod|min|max|avg] [-t allreduce|allgather|reduce_scatter|broadcast|sparse_allreduce]\n"
            "                  [-c 0|1] [-T tcp|verbs|auto] [-R 0|1] [--config]\n"
            "                  [-z codec [-a auto|allgather|two_phase|ring] [-E 0|1]]\n"
            "  -R 1  register the buffers with terse_mem_register (zero-copy sends on verbs)\n"
            "  -z C  compressed allreduce (float32, sum/avg) with codec C (cnat8, sign, topk, ...);\n"
            "        -a its algorithm, -E 0 turns worker error feedback off\n"
            "  -t sparse_allreduce [-k density]: sparse allreduce of density x n pairs per rank\n"
            "  -n N  fork N local ranks (default: the ranks of mpirun/srun, else 2)\n");
}

int main(int argc, char **argv)
{
    opts_t o = {.minb = 8, .maxb = 32 << 20, .factor = 2, .warmup = 5, .iters = 0, .check = 1,
                .nranks = 0, .dtype = TERSE_FLOAT32, .op = TERSE_SUM, .coll = "allreduce",
                .feedback = 1, .density = 0.01};
    static struct option lopts[] = {{"config", no_argument, 0, 'C'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "n:b:e:f:w:i:d:o:t:c:T:R:z:a:E:k:h", lopts, NULL)) != -1) {
        switch (c) {
        case 'n': o.nranks = atoi(optarg); break;
        case 'b': if (parse_size(optarg, &o.minb)) { usage(); return 2; } break;
        case 'e': if (parse_size(optarg, &o.maxb)) { usage(); return 2; } break;
        case 'f': o.factor = atof(optarg); break;
        case 'w': o.warmup = atoi(optarg); break;
        case 'i': o.iters = atoi(optarg); break;
        case 'c': o.check = atoi(optarg); break;
        case 'T': o.transport = optarg; break;
        case 'R': o.reg = atoi(optarg); break;
        case 'z': o.codec = optarg; break;
        case 'a': o.algo = optarg; break;
        case 'E': o.feedback = atoi(optarg); break;
        case 'k': o.density = atof(optarg); break;
        case 't': o.coll = optarg; break;
        case 'd': {
            int k;
            for (k = 0; k < TERSE_DTYPE_COUNT && strcmp(optarg, terse_dtype_name((terse_dtype_t)k)); k++) {}
            if (k == TERSE_DTYPE_COUNT) { usage(); return 2; }
            o.dtype = (terse_dtype_t)k;
            break;
        }
        case 'o': {
            int k;
            for (k = 0; k < TERSE_OP_COUNT && strcmp(optarg, terse_op_name((terse_op_t)k)); k++) {}
            if (k == TERSE_OP_COUNT) { usage(); return 2; }
            o.op = (terse_op_t)k;
            break;
        }
        case 'C': terse_config_print(stdout); return 0;
        default: usage(); return c == 'h' ? 0 : 2;
        }
    }
    if (strcmp(o.coll, "allreduce") && strcmp(o.coll, "allgather") && strcmp(o.coll, "reduce_scatter") &&
        strcmp(o.coll, "broadcast") && strcmp(o.coll, "sparse_allreduce")) {
        usage();
        return 2;
    }
    if ((o.codec || !strcmp(o.coll, "sparse_allreduce")) &&
        (strcmp(o.coll, o.codec ? "allreduce" : "sparse_allreduce") || o.dtype != TERSE_FLOAT32 ||
         (o.op != TERSE_SUM && o.op != TERSE_AVG) || !(o.density > 0 && o.density <= 1))) {
        fprintf(stderr, "terse_perf: -z and -t sparse_allreduce take float32 sum (or avg for -z), "
                        "density in (0, 1]\n");
        return 2;
    }
    if (o.factor <= 1 || o.iters < 0 || o.minb > o.maxb || o.minb < terse_dtype_size(o.dtype)) {
        fprintf(stderr, "terse_perf: need factor > 1, iters >= 1, dtype size <= minbytes <= maxbytes\n");
        return 2;
    }
    int xr, xs;
    if (terse_launch_external(&xr, &xs) && o.nranks == 0) {
        terse_launch_ctx_t ctx = {.rank = xr, .size = xs};
        return body(&ctx, &o); /* identity and rendezvous from the launcher's environment */
    }
    int n = o.nranks ? o.nranks : 2;
    int codes[1024];
    if (n < 1 || n > 1024) {
        fprintf(stderr, "terse_perf: -n must be 1..1024\n");
        return 2;
    }
    int rc = terse_launch(n, 3600, body, &o, codes);
    for (int r = 0; r < n; r++)
        if (codes[r])
            fprintf(stderr, "terse_perf: rank %d exited with %d\n", r, codes[r]);
    return rc;
}
