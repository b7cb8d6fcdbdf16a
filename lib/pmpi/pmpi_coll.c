/*
 * pmpi_coll.c - the collectives libterse_pmpi takes over, and the checks
 * that send everything else to the MPI. The checks run cheapest first and
 * look only at arguments that are the same on every rank, so a call terse
 * does not take costs a few comparisons.
 */
#include "pmpi.h"

#include <string.h>

/* Reduction types: the predefined C and Fortran names of terse's dtypes. */
static int reduce_dtype(MPI_Datatype dt, terse_dtype_t *t, size_t *size)
{
    if (dt == MPI_FLOAT || dt == MPI_REAL || dt == MPI_REAL4)
        *t = TERSE_FLOAT32, *size = 4;
    else if (dt == MPI_DOUBLE || dt == MPI_DOUBLE_PRECISION || dt == MPI_REAL8)
        *t = TERSE_FLOAT64, *size = 8;
    else if (dt == MPI_INT || dt == MPI_INT32_T || dt == MPI_INTEGER || dt == MPI_INTEGER4)
        *t = TERSE_INT32, *size = 4;
    else if ((sizeof(long) == 8 && dt == MPI_LONG) || dt == MPI_LONG_LONG_INT || dt == MPI_LONG_LONG ||
             dt == MPI_INT64_T || dt == MPI_INTEGER8)
        *t = TERSE_INT64, *size = 8;
    else
        return 0;
    return 1;
}

/* Data movement only needs a predefined contiguous type's size. */
static int move_dtype(MPI_Datatype dt, size_t *size)
{
    terse_dtype_t t;
    if (reduce_dtype(dt, &t, size))
        return 1;
    static const MPI_Datatype bytes1[] = {MPI_BYTE, MPI_CHAR, MPI_SIGNED_CHAR, MPI_UNSIGNED_CHAR, MPI_INT8_T,
                                          MPI_UINT8_T, MPI_CHARACTER};
    for (size_t i = 0; i < sizeof(bytes1) / sizeof(bytes1[0]); i++)
        if (dt == bytes1[i])
            return *size = 1, 1;
    if (dt == MPI_SHORT || dt == MPI_UNSIGNED_SHORT || dt == MPI_INT16_T || dt == MPI_UINT16_T)
        return *size = 2, 1;
    if (dt == MPI_UNSIGNED || dt == MPI_UINT32_T || dt == MPI_LOGICAL || dt == MPI_COMPLEX)
        return *size = 4, 1;
    if (dt == MPI_UNSIGNED_LONG || dt == MPI_UINT64_T || dt == MPI_DOUBLE_COMPLEX || dt == MPI_C_DOUBLE_COMPLEX ||
        dt == MPI_C_FLOAT_COMPLEX)
        return *size = dt == MPI_DOUBLE_COMPLEX || dt == MPI_C_DOUBLE_COMPLEX ? 16 : 8, 1;
    return 0;
}

static int reduce_op(MPI_Op op, terse_op_t *t)
{
    if (op == MPI_SUM)
        *t = TERSE_SUM;
    else if (op == MPI_MAX)
        *t = TERSE_MAX;
    else if (op == MPI_MIN)
        *t = TERSE_MIN;
    else if (op == MPI_PROD)
        *t = TERSE_PROD;
    else
        return 0;
    return 1;
}

/* The communicator, built at its first eligible call; NULL: fall through. */
static pmpi_comm_t *eligible(MPI_Comm comm, size_t bytes)
{
    if (comm == MPI_COMM_NULL) /* the MPI reports it */
        return NULL;
    pmpi_comm_t *e = terse_pmpi__comm(comm, 1);
    if (!e || !e->eligible) {
        terse_pmpi__fell(comm, e ? e->why : TERSE_PMPI_FELL_COMM, bytes);
        return NULL;
    }
    return e;
}

static int gate(unsigned coll, size_t bytes, MPI_Comm comm)
{
    const pmpi_global_t *g = &terse_pmpi__g;
    if (!g->active) {
        terse_pmpi__fell(comm, g->thread_multiple ? TERSE_PMPI_FELL_THREADS
                               : g->one_host     ? TERSE_PMPI_FELL_NODE
                                                 : TERSE_PMPI_FELL_OFF, bytes);
        return 0;
    }
    if (!(g->colls & coll)) {
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_DISABLED, bytes);
        return 0;
    }
    if (bytes < g->threshold) {
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_SMALL, bytes);
        return 0;
    }
    return 1;
}

static int done(MPI_Comm comm, pmpi_comm_t *e, terse_status_t st, size_t bytes, int *taken)
{
    *taken = 1;
    if (st != TERSE_OK)
        return terse_pmpi__raise(comm, e, st);
    e->taken++;
    e->taken_bytes += bytes;
    return MPI_SUCCESS;
}

/* A learning-style codec: one compressed allreduce per count, without
 * error feedback (each MPI call stands alone), cached on the communicator. */
static terse_status_t codec_allreduce(pmpi_comm_t *e, const float *s, float *r, size_t count)
{
    terse_compressed_t *h = NULL;
    for (int i = 0; i < TERSE_PMPI_CODEC_CACHE && !h; i++)
        if (e->codec[i].h && e->codec[i].count == count)
            h = e->codec[i].h;
    if (!h) {
        terse_compressed_params_t p;
        terse_compressed_params_init(&p);
        p.codec = e->cz.codec;
        p.op = TERSE_SUM;
        p.error_feedback = 0;
        terse_status_t st = terse_compressed_create(e->tc, count, &p, &h);
        if (st != TERSE_OK)
            return st;
        int slot = e->codec_next++ % TERSE_PMPI_CODEC_CACHE;
        if (e->codec[slot].h)
            terse_compressed_destroy(e->codec[slot].h);
        e->codec[slot].h = h, e->codec[slot].count = count;
    }
    terse_status_t st = terse_compressed_allreduce(h, s, r);
    terse_compressed_stats_t cs;
    if (st == TERSE_OK && terse_compressed_stats(h, &cs) == TERSE_OK) {
        e->lossy_calls++;
        e->lossy_raw += (double)count * 4 * 2 * (e->size - 1) / e->size;
        e->lossy_code += (double)cs.bytes_sent;
    }
    return st;
}

/* 1: handled by a compressed mode (*st set); 0: run it exact. */
static int lossy(pmpi_comm_t *e, const void *s, void *r, size_t count, terse_dtype_t t, terse_op_t op,
                 size_t bytes, MPI_Comm comm, terse_status_t *st)
{
    if (e->cz.kind == TERSE_CZ_NONE || op != TERSE_SUM || bytes < e->cz.min_bytes ||
        (t != TERSE_FLOAT32 && t != TERSE_FLOAT64))
        return 0;
    if (e->cz.kind == TERSE_CZ_CODEC) {
        if (t != TERSE_FLOAT32)
            return 0;
        *st = codec_allreduce(e, s, r, count);
        return 1;
    }
    terse_eb_info_t info;
    *st = terse_eb_allreduce(e->tc, s, r, count, t, e->cz.kind == TERSE_CZ_ABS ? TERSE_EB_ABS : TERSE_EB_REL,
                             e->cz.bound, &info);
    if (*st == TERSE_ERR_UNSUPPORTED || *st == TERSE_ERR_INVALID_ARG) {
        /* the same refusal on every rank: the MPI's exact sum (NaN as the MPI has it) */
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_EB, bytes);
        *st = TERSE_OK;
        return -1;
    }
    if (*st == TERSE_OK) {
        e->lossy_calls++;
        e->lossy_raw += (double)bytes;
        e->lossy_code += info.ratio > 0 ? (double)bytes / info.ratio : (double)bytes;
        if (info.max_error > e->eb_max_error)
            e->eb_max_error = info.max_error;
        if (info.bound > e->eb_bound)
            e->eb_bound = info.bound;
    }
    return 1;
}

int terse_pmpi__allreduce(const void *s, void *r, int count, MPI_Datatype dt, MPI_Op op, MPI_Comm comm, int *taken)
{
    terse_dtype_t t;
    terse_op_t top;
    size_t esize;
    *taken = 0;
    if (!reduce_dtype(dt, &t, &esize)) {
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_DTYPE, 0);
        return MPI_SUCCESS;
    }
    size_t bytes = count > 0 ? (size_t)count * esize : 0;
    if (!gate(TERSE_PMPI_ALLREDUCE, bytes, comm) || count <= 0)
        return MPI_SUCCESS;
    if (!reduce_op(op, &top)) {
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_OP, bytes);
        return MPI_SUCCESS;
    }
    pmpi_comm_t *e = eligible(comm, bytes);
    if (!e)
        return MPI_SUCCESS;
    const void *src = s == MPI_IN_PLACE ? r : s;
    terse_status_t st;
    int l = lossy(e, src, r, (size_t)count, t, top, bytes, comm, &st);
    if (l < 0)
        return MPI_SUCCESS; /* refused by the error bound: the MPI runs it */
    if (!l)
        st = terse_allreduce(e->tc, src, r, (size_t)count, t, top);
    return done(comm, e, st, bytes, taken);
}

int terse_pmpi__reduce_scatter_block(const void *s, void *r, int count, MPI_Datatype dt, MPI_Op op,
                                     MPI_Comm comm, int *taken)
{
    terse_dtype_t t;
    terse_op_t top;
    size_t esize;
    *taken = 0;
    if (!reduce_dtype(dt, &t, &esize)) {
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_DTYPE, 0);
        return MPI_SUCCESS;
    }
    int size = 1;
    if (comm != MPI_COMM_NULL)
        PMPI_Comm_size(comm, &size);
    size_t bytes = count > 0 ? (size_t)count * esize * (size_t)size : 0;
    if (!gate(TERSE_PMPI_REDUCE_SCATTER, bytes, comm) || count <= 0)
        return MPI_SUCCESS;
    if (!reduce_op(op, &top)) {
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_OP, bytes);
        return MPI_SUCCESS;
    }
    pmpi_comm_t *e = eligible(comm, bytes);
    if (!e)
        return MPI_SUCCESS;
    /* MPI_IN_PLACE: the input is recvbuf, the result lands at its start - terse's same-pointer form */
    const void *src = s == MPI_IN_PLACE ? r : s;
    return done(comm, e, terse_reduce_scatter(e->tc, src, r, (size_t)count, t, top), bytes, taken);
}

/* Bytes moved as 32-bit words (terse moves typed elements). */
static int words_of(size_t bytes, size_t *words)
{
    *words = bytes / 4;
    return bytes % 4 == 0;
}

int terse_pmpi__allgather(const void *s, int scount, MPI_Datatype sdt, void *r, int rcount, MPI_Datatype rdt,
                          MPI_Comm comm, int *taken)
{
    size_t esize, words;
    *taken = 0;
    if (!move_dtype(rdt, &esize)) {
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_DTYPE, 0);
        return MPI_SUCCESS;
    }
    int size = 1;
    if (comm != MPI_COMM_NULL)
        PMPI_Comm_size(comm, &size);
    size_t bytes = rcount > 0 ? (size_t)rcount * esize * (size_t)size : 0;
    if (!gate(TERSE_PMPI_ALLGATHER, bytes, comm) || rcount <= 0)
        return MPI_SUCCESS;
    /* in place or the same type and count on both sides; 4-byte multiples */
    if ((s != MPI_IN_PLACE && (sdt != rdt || scount != rcount)) || !words_of((size_t)rcount * esize, &words)) {
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_ARGS, bytes);
        return MPI_SUCCESS;
    }
    pmpi_comm_t *e = eligible(comm, bytes);
    if (!e)
        return MPI_SUCCESS;
    const void *src = s == MPI_IN_PLACE ? (const char *)r + (size_t)e->rank * words * 4 : s;
    return done(comm, e, terse_allgather(e->tc, src, r, words, TERSE_INT32), bytes, taken);
}

int terse_pmpi__bcast(void *buf, int count, MPI_Datatype dt, int root, MPI_Comm comm, int *taken)
{
    size_t esize, words;
    *taken = 0;
    if (!move_dtype(dt, &esize)) {
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_DTYPE, 0);
        return MPI_SUCCESS;
    }
    size_t bytes = count > 0 ? (size_t)count * esize : 0;
    if (!gate(TERSE_PMPI_BCAST, bytes, comm) || count <= 0)
        return MPI_SUCCESS;
    if (!words_of(bytes, &words)) {
        terse_pmpi__fell(comm, TERSE_PMPI_FELL_ARGS, bytes);
        return MPI_SUCCESS;
    }
    pmpi_comm_t *e = eligible(comm, bytes);
    if (!e || root < 0 || root >= e->size) /* a bad root: the MPI reports it */
        return MPI_SUCCESS;
    return done(comm, e, terse_broadcast(e->tc, buf, buf, words, TERSE_INT32, root), bytes, taken);
}

int terse_pmpi__barrier(MPI_Comm comm, int *taken)
{
    *taken = 0;
    const pmpi_global_t *g = &terse_pmpi__g;
    if (!g->active || !(g->colls & TERSE_PMPI_BARRIER)) {
        terse_pmpi__fell(comm, g->active ? TERSE_PMPI_FELL_DISABLED : g->one_host ? TERSE_PMPI_FELL_NODE : TERSE_PMPI_FELL_OFF, 0);
        return MPI_SUCCESS;
    }
    pmpi_comm_t *e = eligible(comm, 0);
    if (!e)
        return MPI_SUCCESS;
    return done(comm, e, terse_barrier(e->tc), 0, taken);
}

/* ---- the C entry points ------------------------------------------------ */

TERSE_PMPI_EXPORT int MPI_Allreduce(const void *s, void *r, int count, MPI_Datatype dt, MPI_Op op, MPI_Comm comm)
{
    int taken, rc = terse_pmpi__allreduce(s, r, count, dt, op, comm, &taken);
    return taken ? rc : PMPI_Allreduce(s, r, count, dt, op, comm);
}

TERSE_PMPI_EXPORT int MPI_Reduce_scatter_block(const void *s, void *r, int count, MPI_Datatype dt, MPI_Op op, MPI_Comm comm)
{
    int taken, rc = terse_pmpi__reduce_scatter_block(s, r, count, dt, op, comm, &taken);
    return taken ? rc : PMPI_Reduce_scatter_block(s, r, count, dt, op, comm);
}

TERSE_PMPI_EXPORT int MPI_Allgather(const void *s, int scount, MPI_Datatype sdt, void *r, int rcount, MPI_Datatype rdt, MPI_Comm comm)
{
    int taken, rc = terse_pmpi__allgather(s, scount, sdt, r, rcount, rdt, comm, &taken);
    return taken ? rc : PMPI_Allgather(s, scount, sdt, r, rcount, rdt, comm);
}

TERSE_PMPI_EXPORT int MPI_Bcast(void *buf, int count, MPI_Datatype dt, int root, MPI_Comm comm)
{
    int taken, rc = terse_pmpi__bcast(buf, count, dt, root, comm, &taken);
    return taken ? rc : PMPI_Bcast(buf, count, dt, root, comm);
}

TERSE_PMPI_EXPORT int MPI_Barrier(MPI_Comm comm)
{
    int taken, rc = terse_pmpi__barrier(comm, &taken);
    return taken ? rc : PMPI_Barrier(comm);
}

/* Non-blocking forms are counted and left to the MPI: its requests are
 * completed by its own progress, which cannot drive terse's. */
TERSE_PMPI_EXPORT int MPI_Iallreduce(const void *s, void *r, int count, MPI_Datatype dt, MPI_Op op, MPI_Comm comm, MPI_Request *req)
{
    terse_pmpi__fell(comm, TERSE_PMPI_FELL_NONBLOCKING, 0);
    return PMPI_Iallreduce(s, r, count, dt, op, comm, req);
}
