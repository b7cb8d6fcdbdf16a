/*
 * ebound.c - error-bounded allreduce (include/terse.h, "Error-bounded
 * allreduce"; the bound is proved in docs/design.md).
 *
 * 1. agree (one small MAX allreduce): every rank's min, max, finiteness and
 *    arguments, so every refusal is the same everywhere;
 * 2. quantise on the shared grid q = rint(x / step), step a power of two, and
 *    pack block j's codes for its owner j (ebpack.h); alltoall of the sizes,
 *    alltoallv of the codes;
 * 3. the owner sums the n code blocks as int64 - exactly - and packs the sum;
 *    allgather of (size, largest quantisation error), allgatherv of the sums;
 * 4. everyone unpacks every sum and writes step x sum.
 * The integers are exact, so the result is the same on every rank and its
 * only error is the quantisation of step 2.
 */
#include "ebpack.h"
#include "../log.h"
#include "terse.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { AG_MAX, AG_NEGMIN, AG_BAD, AG_BOUND, AG_NEGBOUND, AG_MODE, AG_NEGMODE, AG_DTYPE, AG_NEGDTYPE,
       AG_COUNT, AG_NEGCOUNT, AG_LEN };
#define BAD_VALUE 1.0 /* a NaN or infinity in the input */
#define BAD_MEMORY 2.0 /* this rank could not allocate its buffers */
#define BAD_ARG 3.0

static void block_of(size_t count, int n, int j, size_t *off, size_t *len)
{
    size_t base = count / (size_t)n, rem = count % (size_t)n;
    *off = (size_t)j * base + ((size_t)j < rem ? (size_t)j : rem);
    *len = base + ((size_t)j < rem);
}

static int local_range(const void *x, size_t count, terse_dtype_t dt, double *lo, double *hi)
{
    double mn = INFINITY, mx = -INFINITY;
    int finite = 1;
    if (dt == TERSE_FLOAT32) {
        const float *f = x;
        for (size_t i = 0; i < count; i++) {
            float v = f[i];
            finite &= isfinite(v) != 0;
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
    } else {
        const double *d = x;
        for (size_t i = 0; i < count; i++) {
            double v = d[i];
            finite &= isfinite(v) != 0;
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
    }
    *lo = mn, *hi = mx;
    return finite;
}

/* Round to nearest (even) by the 1.5 x 2^52 trick: exact for |y| < 2^51,
 * which grid_step guarantees, and a few times faster than rint(). */
static inline double round_grid(double y)
{
    const double magic = 0x1.8p52;
    return (y + magic) - magic;
}

/* One frame's codes; *err the largest |x - step q| so far. */
#define QUANTISE(T)                                                             \
    static void quantise_##T(const T *x, int m, double inv, double step, int64_t *q, double *err) \
    {                                                                           \
        double e = *err;                                                        \
        for (int k = 0; k < m; k++) {                                           \
            double v = (double)x[k], r = round_grid(v * inv);                   \
            double d = fabs(v - r * step);                                      \
            e = d > e ? d : e;                                                  \
            q[k] = (int64_t)r;                                                  \
        }                                                                       \
        *err = e;                                                               \
    }
QUANTISE(float)
QUANTISE(double)

/* Quantise and pack len values; returns bytes (a multiple of 4), *maxerr the
 * largest |x - step q|. */
static size_t quantise_pack(const void *x, size_t len, terse_dtype_t dt, double step, uint8_t *out,
                            double *maxerr)
{
    int64_t q[TERSE_EB_FRAME];
    double inv = 1.0 / step, err = 0; /* exact: step is a power of two */
    uint8_t *p = out;
    for (size_t i = 0; i < len; i += TERSE_EB_FRAME) {
        int m = (int)(len - i < TERSE_EB_FRAME ? len - i : TERSE_EB_FRAME);
        if (dt == TERSE_FLOAT32)
            quantise_float((const float *)x + i, m, inv, step, q, &err);
        else
            quantise_double((const double *)x + i, m, inv, step, q, &err);
        p += terse__eb_pack_frame(q, m, p);
    }
    while ((p - out) & 3)
        *p++ = 0;
    *maxerr = err;
    return (size_t)(p - out);
}

/* acc = (first ? 0 : acc) + the codes */
static int unpack_add(const uint8_t *in, size_t bytes, size_t len, int64_t *acc, int first)
{
    const uint8_t *p = in, *end = in + bytes;
    int64_t q[TERSE_EB_FRAME];
    for (size_t i = 0; i < len; i += TERSE_EB_FRAME) {
        int m = (int)(len - i < TERSE_EB_FRAME ? len - i : TERSE_EB_FRAME);
        if (first) {
            if (!(p = terse__eb_unpack_frame(p, end, m, acc + i)))
                return 0;
            continue;
        }
        if (!(p = terse__eb_unpack_frame(p, end, m, q)))
            return 0;
        for (int k = 0; k < m; k++)
            acc[i + k] += q[k];
    }
    return 1;
}

static int unpack_store(const uint8_t *in, size_t bytes, size_t len, double step, terse_dtype_t dt, void *out)
{
    const uint8_t *p = in, *end = in + bytes;
    int64_t q[TERSE_EB_FRAME];
    for (size_t i = 0; i < len; i += TERSE_EB_FRAME) {
        int m = (int)(len - i < TERSE_EB_FRAME ? len - i : TERSE_EB_FRAME);
        if (!(p = terse__eb_unpack_frame(p, end, m, q)))
            return 0;
        if (dt == TERSE_FLOAT32)
            for (int k = 0; k < m; k++)
                ((float *)out)[i + k] = (float)((double)q[k] * step);
        else
            for (int k = 0; k < m; k++)
                ((double *)out)[i + k] = (double)q[k] * step;
    }
    return 1;
}

/* The grid step for bound E: the largest power of two with n step/2 + r <= E,
 * r the output's rounding at the result's magnitude; 0 if none. */
static double grid_step(double E, double maxabs, int n, terse_dtype_t dt, double *rounding)
{
    double M = (double)n * maxabs;                    /* |exact sum| <= M */
    double u = dt == TERSE_FLOAT32 ? ldexp(1.0, -24) : 0.0; /* float64: step x sum is exact */
    double r = u * (M + E);                           /* |result| <= M + E */
    *rounding = r;
    if (!(E > r))
        return 0;
    int e;
    frexp(2.0 * (E - r) / n, &e);
    double step = ldexp(1.0, e - 1);                  /* <= 2 (E - r) / n */
    while (step > 0 && n * step / 2 + r > E)
        step /= 2;
    /* the integer sums must stay exact in a double (and the differences in 56 bits);
     * below 2^51 the rounding trick of round_grid is exact too */
    if (step == 0 || M / step + n >= ldexp(1.0, 51))
        return 0;
    return step;
}

/* Every rank learns whether any rank failed to allocate (one tiny allreduce),
 * so nobody is left waiting in an exchange another rank skipped. */
static terse_status_t agree_alloc(terse_comm_t *comm, int failed)
{
    int32_t f = failed != 0;
    terse_status_t st = terse_allreduce(comm, &f, &f, 1, TERSE_INT32, TERSE_MAX);
    return st != TERSE_OK ? st : f ? TERSE_ERR_NO_MEMORY : TERSE_OK;
}

typedef struct {
    size_t *off, *len, *sbytes, *sdisp, *swords, *rwords, *rdisp;
    int64_t *ssz, *rsz, *gsz;
    uint8_t *scodes, *rcodes, *mine, *all;
    int64_t *acc;
} eb_bufs_t;

/* The large buffers are kept per thread between calls: fresh pages of
 * megabyte buffers cost as much to fault in as the coding itself. */
enum { S_SCODES, S_RCODES, S_MINE, S_ALL, S_ACC, S_COUNT };
typedef struct {
    void *p[S_COUNT];
    size_t cap[S_COUNT];
} eb_scratch_t;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *arg)
{
    eb_scratch_t *s = arg;
    for (int i = 0; i < S_COUNT; i++)
        free(s->p[i]);
    free(s);
}

static void scratch_init(void) { pthread_key_create(&scratch_key, scratch_free); }

/* Buffer `which` of at least len bytes (contents not kept), or NULL. */
static void *scratch(int which, size_t len)
{
    pthread_once(&scratch_once, scratch_init);
    eb_scratch_t *s = pthread_getspecific(scratch_key);
    if (!s) {
        if (!(s = calloc(1, sizeof(*s))))
            return NULL;
        pthread_setspecific(scratch_key, s);
    }
    if (s->cap[which] < len) {
        free(s->p[which]);
        s->p[which] = malloc(len);
        s->cap[which] = s->p[which] ? len : 0;
    }
    return s->p[which];
}

static void bufs_free(eb_bufs_t *b)
{
    free(b->off), free(b->ssz); /* the rest is scratch */
}

static int bufs_alloc(eb_bufs_t *b, size_t count, int n, int me)
{
    memset(b, 0, sizeof(*b));
    if (!(b->off = calloc((size_t)n * 7, sizeof(size_t))) ||
        !(b->ssz = calloc((size_t)n * 4, sizeof(int64_t))))
        return 0;
    b->len = b->off + n, b->sbytes = b->len + n, b->sdisp = b->sbytes + n, b->swords = b->sdisp + n;
    b->rwords = b->swords + n, b->rdisp = b->rwords + n;
    b->rsz = b->ssz + n, b->gsz = b->rsz + n;
    size_t code = 0;
    for (int j = 0; j < n; j++) {
        block_of(count, n, j, &b->off[j], &b->len[j]);
        code += terse__eb_pack_bound(b->len[j]) + 4;
    }
    b->scodes = scratch(S_SCODES, code);
    b->mine = scratch(S_MINE, terse__eb_pack_bound(b->len[me]) + 4);
    b->acc = scratch(S_ACC, (b->len[me] ? b->len[me] : 1) * sizeof(int64_t));
    return b->scodes && b->mine && b->acc;
}

static size_t pack_sums(const int64_t *acc, size_t len, uint8_t *out)
{
    uint8_t *p = out;
    for (size_t i = 0; i < len; i += TERSE_EB_FRAME)
        p += terse__eb_pack_frame(acc + i, (int)(len - i < TERSE_EB_FRAME ? len - i : TERSE_EB_FRAME), p);
    while ((p - out) & 3)
        *p++ = 0;
    return (size_t)(p - out);
}

/* Steps 2-4 once the grid is agreed. */
static terse_status_t exchange(terse_comm_t *comm, eb_bufs_t *b, const void *sendbuf, void *recvbuf,
                               terse_dtype_t dt, double step, double *errsum, size_t *codebytes)
{
    int n = terse_comm_size(comm), me = terse_comm_rank(comm);
    size_t esize = terse_dtype_size(dt), pos = 0;
    double qerr = 0, e;
    for (int j = 0; j < n; j++) {
        b->sdisp[j] = pos / 4;
        b->sbytes[j] = quantise_pack((const char *)sendbuf + b->off[j] * esize, b->len[j], dt, step,
                                     b->scodes + pos, &e);
        b->swords[j] = b->sbytes[j] / 4;
        b->ssz[j] = (int64_t)b->sbytes[j];
        qerr = fmax(qerr, e);
        pos += b->sbytes[j];
    }
    *codebytes = pos;
    terse_status_t st = terse_alltoall(comm, b->ssz, b->rsz, 1, TERSE_INT64);
    if (st != TERSE_OK)
        return st;
    size_t rtotal = 0;
    for (int j = 0; j < n; j++) {
        b->rdisp[j] = rtotal;
        b->rwords[j] = (size_t)b->rsz[j] / 4;
        rtotal += b->rwords[j];
    }
    b->rcodes = scratch(S_RCODES, rtotal * 4 + 4);
    if ((st = agree_alloc(comm, !b->rcodes)) != TERSE_OK ||
        (st = terse_alltoallv(comm, b->scodes, b->swords, b->sdisp, b->rcodes, b->rwords, b->rdisp,
                              TERSE_INT32)) != TERSE_OK)
        return st;
    int malformed = 0;
    for (int j = 0; j < n && !malformed; j++)
        malformed = !unpack_add(b->rcodes + b->rdisp[j] * 4, b->rwords[j] * 4, b->len[me], b->acc, j == 0);
    size_t mybytes = malformed ? 0 : pack_sums(b->acc, b->len[me], b->mine);
    /* (size, or -1 for codes that did not decode; largest quantisation error) */
    int64_t mine[2] = {malformed ? -1 : (int64_t)mybytes, 0};
    memcpy(&mine[1], &qerr, sizeof(double));
    if ((st = terse_allgather(comm, mine, b->gsz, 2, TERSE_INT64)) != TERSE_OK)
        return st;
    size_t gtotal = 0;
    *errsum = 0;
    for (int j = 0; j < n; j++) {
        if (b->gsz[2 * j] < 0)
            malformed = 1;
        memcpy(&e, &b->gsz[2 * j + 1], sizeof(double));
        *errsum += e;
        b->rwords[j] = b->gsz[2 * j] > 0 ? (size_t)b->gsz[2 * j] / 4 : 0;
        b->rdisp[j] = gtotal;
        gtotal += b->rwords[j];
    }
    if (malformed)
        return TERSE_ERR_PROTOCOL; /* every rank saw the same -1 */
    b->all = scratch(S_ALL, gtotal * 4 + 4);
    if ((st = agree_alloc(comm, !b->all)) != TERSE_OK ||
        (st = terse_allgatherv(comm, b->mine, mybytes / 4, b->all, b->rwords, b->rdisp, TERSE_INT32)) != TERSE_OK)
        return st;
    for (int j = 0; j < n; j++)
        if (!unpack_store(b->all + b->rdisp[j] * 4, b->rwords[j] * 4, b->len[j], step, dt,
                          (char *)recvbuf + b->off[j] * esize))
            return TERSE_ERR_PROTOCOL;
    return TERSE_OK;
}

terse_status_t terse_eb_allreduce(terse_comm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
                                  terse_dtype_t dtype, terse_eb_mode_t mode, double bound, terse_eb_info_t *info)
{
    if (!comm)
        return TERSE_ERR_INVALID_ARG;
    int n = terse_comm_size(comm), me = terse_comm_rank(comm);
    int bad_arg = (dtype != TERSE_FLOAT32 && dtype != TERSE_FLOAT64) || (mode != TERSE_EB_ABS && mode != TERSE_EB_REL) ||
                  !(bound > 0) || !isfinite(bound) || (count && (!sendbuf || !recvbuf));
    eb_bufs_t b;
    int have = bad_arg || count == 0 ? (memset(&b, 0, sizeof(b)), 1) : bufs_alloc(&b, count, n, me);
    double lo = INFINITY, hi = -INFINITY;
    int finite = bad_arg || !have ? 1 : local_range(sendbuf, count, dtype, &lo, &hi);
    double ag[AG_LEN] = {hi, -lo, bad_arg ? BAD_ARG : !have ? BAD_MEMORY : finite ? 0 : BAD_VALUE,
                         bad_arg ? 0 : bound, bad_arg ? 0 : -bound, mode, -(double)mode, dtype, -(double)dtype,
                         (double)count, -(double)count};
    terse_comm_stats_t s0, s1;
    terse_comm_stats(comm, &s0);
    terse_status_t st = terse_allreduce(comm, ag, ag, AG_LEN, TERSE_FLOAT64, TERSE_MAX);
    double E = 0, r = 0, step = 0, errsum = 0;
    size_t codebytes = 0;
    if (st != TERSE_OK) {
    } else if (ag[AG_BAD] >= BAD_ARG) {
        TERSE_WARN(COLL, "eb allreduce: a rank passed an invalid mode, bound, dtype or buffer");
        st = TERSE_ERR_INVALID_ARG;
    } else if (ag[AG_BOUND] != -ag[AG_NEGBOUND] || ag[AG_MODE] != -ag[AG_NEGMODE] ||
               ag[AG_DTYPE] != -ag[AG_NEGDTYPE] || ag[AG_COUNT] != -ag[AG_NEGCOUNT]) {
        TERSE_WARN(COLL, "eb allreduce: ranks passed different counts, dtypes, modes or bounds");
        st = TERSE_ERR_MISMATCH;
    } else if (ag[AG_BAD] >= BAD_MEMORY) {
        st = TERSE_ERR_NO_MEMORY;
    } else if (ag[AG_BAD] >= BAD_VALUE) {
        TERSE_WARN(COLL, "eb allreduce: a NaN or infinity in some rank's input; no bound can hold");
        st = TERSE_ERR_INVALID_ARG;
    } else if (count > 0) {
        double gmax = ag[AG_MAX], gmin = -ag[AG_NEGMIN];
        E = mode == TERSE_EB_ABS ? bound : bound * (gmax - gmin);
        step = E > 0 && isfinite(E) ? grid_step(E, fmax(fabs(gmax), fabs(gmin)), n, dtype, &r) : 0;
        /* a constant field under a relative bound, or a bound below the output's precision */
        st = step == 0 ? TERSE_ERR_UNSUPPORTED : exchange(comm, &b, sendbuf, recvbuf, dtype, step, &errsum, &codebytes);
    }
    if (st == TERSE_OK && info) {
        terse_comm_stats(comm, &s1);
        info->bound = E;
        info->step = step;
        info->max_error = count ? errsum + r : 0;
        info->ratio = codebytes ? (double)(count * terse_dtype_size(dtype)) / (double)codebytes : 0;
        info->bytes_sent = (size_t)(s1.bytes_sent - s0.bytes_sent);
    }
    bufs_free(&b);
    return st;
}
