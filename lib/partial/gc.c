/*
 * gc.c - gradient coding (Tandon, Lei, Dimakis, Karampatziakis, ICML 2017):
 * which partitions each rank computes with which coefficients (the encoding
 * matrix B), and the decoding vector a_S of a responder set S, with
 * a_S^T B_S = 1^T. Pure double-precision arithmetic on (n, s, seed), in a
 * fixed order, so every rank computes the same bits.
 */
#include "../log.h"
#include "../net.h"
#include "terse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GC_MAX_N 1024

struct terse_gc {
    int n, s;
    terse_gc_scheme_t scheme;
    double *B; /* n x n, row i = rank i's coefficients over the partitions */
};

static double unit(uint64_t seed, uint64_t i)
{
    /* splitmix64 of (seed, i): a byte hash of consecutive i is too regular */
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-53 * 2.0 - 1.0; /* [-1, 1) */
}

/* Solve the m x m system M x = y in place (partial pivoting); -1 if singular. */
static int solve(double *M, double *y, int m)
{
    for (int k = 0; k < m; k++) {
        int piv = k;
        for (int i = k + 1; i < m; i++)
            if (fabs(M[i * m + k]) > fabs(M[piv * m + k]))
                piv = i;
        if (fabs(M[piv * m + k]) < 1e-9)
            return -1;
        if (piv != k) {
            for (int j = 0; j < m; j++) {
                double t = M[k * m + j];
                M[k * m + j] = M[piv * m + j];
                M[piv * m + j] = t;
            }
            double t = y[k];
            y[k] = y[piv];
            y[piv] = t;
        }
        for (int i = k + 1; i < m; i++) {
            double f = M[i * m + k] / M[k * m + k];
            for (int j = k; j < m; j++)
                M[i * m + j] -= f * M[k * m + j];
            y[i] -= f * y[k];
        }
    }
    for (int k = m - 1; k >= 0; k--) {
        double v = y[k];
        for (int j = k + 1; j < m; j++)
            v -= M[k * m + j] * y[j];
        y[k] = v / M[k * m + k];
    }
    return 0;
}

/* Tandon's cyclic B: rows in the null space of a random s x n H with H 1 = 0,
 * row i supported on i..i+s with B_ii = 1. -1 when a system was singular. */
static int cyclic_matrix(terse_gc_t *gc, uint64_t seed)
{
    int n = gc->n, s = gc->s;
    double *H = malloc(sizeof(double) * (size_t)s * (size_t)n);
    double *M = malloc(sizeof(double) * (size_t)s * (size_t)s + 1);
    double *y = malloc(sizeof(double) * (size_t)s + 1);
    int rc = H && M && y ? 0 : -2;
    for (int r = 0; r < s && rc == 0; r++) {
        double sum = 0;
        for (int j = 0; j < n - 1; j++)
            sum += H[r * n + j] = unit(seed, (uint64_t)r * (uint64_t)n + (uint64_t)j);
        H[r * n + n - 1] = -sum;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        double *row = gc->B + (size_t)i * (size_t)n;
        row[i] = 1;
        for (int r = 0; r < s; r++) {
            for (int k = 0; k < s; k++)
                M[r * s + k] = H[r * n + (i + 1 + k) % n];
            y[r] = -H[r * n + i];
        }
        if (s && solve(M, y, s) != 0)
            rc = -1;
        for (int k = 0; k < s && rc == 0; k++)
            row[(i + 1 + k) % n] = y[k];
    }
    free(H);
    free(M);
    free(y);
    return rc;
}

terse_status_t terse_gc_create(int n, int s, terse_gc_scheme_t scheme, uint64_t seed, terse_gc_t **out)
{
    if (!out)
        return TERSE_ERR_INVALID_ARG;
    *out = NULL;
    if (n < 1 || n > GC_MAX_N || s < 0 || s >= n) {
        TERSE_WARN(COLL, "gradient coding: need 1 <= n <= %d and 0 <= s < n (n %d, s %d)", GC_MAX_N, n, s);
        return TERSE_ERR_INVALID_ARG;
    }
    if (scheme != TERSE_GC_FRACTIONAL && scheme != TERSE_GC_CYCLIC) {
        TERSE_WARN(COLL, "gradient coding: unknown scheme %d", (int)scheme);
        return TERSE_ERR_INVALID_ARG;
    }
    if (scheme == TERSE_GC_FRACTIONAL && n % (s + 1) != 0) {
        TERSE_WARN(COLL, "gradient coding: fractional repetition needs s + 1 = %d to divide n = %d", s + 1, n);
        return TERSE_ERR_INVALID_ARG;
    }
    terse_gc_t *gc = calloc(1, sizeof(*gc));
    if (!gc || !(gc->B = calloc((size_t)n * (size_t)n, sizeof(double)))) {
        free(gc);
        return TERSE_ERR_NO_MEMORY;
    }
    gc->n = n, gc->s = s, gc->scheme = scheme;
    if (scheme == TERSE_GC_FRACTIONAL) {
        for (int i = 0; i < n; i++)
            for (int k = 0; k <= s; k++)
                gc->B[(size_t)i * n + (size_t)(i / (s + 1) * (s + 1) + k)] = 1;
    } else {
        int rc = -1;
        /* a singular draw (probability 0 in theory) moves to the next seed */
        for (uint64_t t = 0; t < 16 && rc == -1; t++) {
            memset(gc->B, 0, sizeof(double) * (size_t)n * (size_t)n);
            rc = cyclic_matrix(gc, terse__mix64(seed, 0x6763u + t));
        }
        if (rc != 0) {
            terse_gc_destroy(gc);
            return rc == -2 ? TERSE_ERR_NO_MEMORY : TERSE_ERR_UNSUPPORTED;
        }
    }
    *out = gc;
    return TERSE_OK;
}

void terse_gc_destroy(terse_gc_t *gc)
{
    if (!gc)
        return;
    free(gc->B);
    free(gc);
}

terse_status_t terse_gc_assignment(const terse_gc_t *gc, int rank, int *parts, double *coeffs)
{
    if (!gc || rank < 0 || rank >= gc->n || !parts || !coeffs)
        return TERSE_ERR_INVALID_ARG;
    int n = gc->n, s = gc->s;
    int first = gc->scheme == TERSE_GC_FRACTIONAL ? rank / (s + 1) * (s + 1) : rank;
    for (int k = 0; k <= s; k++) {
        parts[k] = (first + k) % n;
        coeffs[k] = gc->B[(size_t)rank * n + (size_t)parts[k]];
    }
    return TERSE_OK;
}

static int in_set(const uint64_t *set, int i) { return (int)((set[i / 64] >> (i % 64)) & 1u); }

static terse_status_t fractional_decode(const terse_gc_t *gc, const uint64_t *set, int flags, double *a)
{
    int g = gc->s + 1;
    for (int first = 0; first < gc->n; first += g) {
        int m = 0;
        for (int i = first; i < first + g; i++)
            m += in_set(set, i);
        if (!m) {
            TERSE_WARN(COLL, "gradient coding: no responder among ranks %d..%d: their partitions are lost",
                       first, first + g - 1);
            return TERSE_ERR_INVALID_ARG;
        }
        int taken = 0;
        for (int i = first; i < first + g; i++)
            if (in_set(set, i) && (flags & TERSE_GC_AVERAGE || !taken++))
                a[i] = flags & TERSE_GC_AVERAGE ? 1.0 / m : 1.0;
    }
    return TERSE_OK;
}

/* Least squares B_S^T a = 1 by Householder QR over the first n - s
 * responders (more would make the system rank-deficient). */
static terse_status_t cyclic_decode(const terse_gc_t *gc, const uint64_t *set, double *a)
{
    int n = gc->n, m = n - gc->s;
    int *S = malloc(sizeof(int) * (size_t)m);
    double *A = malloc(sizeof(double) * (size_t)n * (size_t)m), *b = malloc(sizeof(double) * (size_t)n);
    terse_status_t st = S && A && b ? TERSE_OK : TERSE_ERR_NO_MEMORY;
    int k = 0;
    for (int i = 0; i < n && k < m && st == TERSE_OK; i++)
        if (in_set(set, i))
            S[k++] = i;
    if (st == TERSE_OK && k < m) {
        TERSE_WARN(COLL, "gradient coding: %d responders, the cyclic code needs %d", k, m);
        st = TERSE_ERR_INVALID_ARG;
    }
    if (st != TERSE_OK)
        goto out;
    for (int r = 0; r < n; r++) { /* A = B_S^T: A[r][c] = B[S[c]][r] */
        b[r] = 1;
        for (int c = 0; c < m; c++)
            A[(size_t)r * m + c] = gc->B[(size_t)S[c] * n + (size_t)r];
    }
    for (int c = 0; c < m; c++) {
        double norm = 0;
        for (int r = c; r < n; r++)
            norm += A[(size_t)r * m + c] * A[(size_t)r * m + c];
        norm = sqrt(norm);
        if (norm < 1e-12) {
            st = TERSE_ERR_UNSUPPORTED;
            goto out;
        }
        double alpha = A[(size_t)c * m + c] > 0 ? -norm : norm;
        /* v = x - alpha e1, stored over column c */
        A[(size_t)c * m + c] -= alpha;
        double vv = 0;
        for (int r = c; r < n; r++)
            vv += A[(size_t)r * m + c] * A[(size_t)r * m + c];
        for (int j = c + 1; j <= m; j++) { /* j == m: the right-hand side */
            double dot = 0;
            for (int r = c; r < n; r++)
                dot += A[(size_t)r * m + c] * (j < m ? A[(size_t)r * m + j] : b[r]);
            double f = 2 * dot / vv;
            for (int r = c; r < n; r++) {
                if (j < m)
                    A[(size_t)r * m + j] -= f * A[(size_t)r * m + c];
                else
                    b[r] -= f * A[(size_t)r * m + c];
            }
        }
        A[(size_t)c * m + c] = alpha; /* R's diagonal */
    }
    for (int c = m - 1; c >= 0; c--) {
        double v = b[c];
        for (int j = c + 1; j < m; j++)
            v -= A[(size_t)c * m + j] * a[S[j]];
        a[S[c]] = v / A[(size_t)c * m + c];
    }
    /* the equations below row m were only solvable if 1 is in B_S's row
     * span: check the residual of the whole system */
    double worst = 0;
    for (int r = 0; r < n; r++) {
        double v = -1;
        for (int c = 0; c < m; c++)
            v += gc->B[(size_t)S[c] * n + (size_t)r] * a[S[c]];
        worst = fmax(worst, fabs(v));
    }
    if (!(worst < 1e-9)) {
        TERSE_WARN(COLL, "gradient coding: responder set is ill-conditioned (residual %.3g)", worst);
        st = TERSE_ERR_UNSUPPORTED;
    }
out:
    free(S);
    free(A);
    free(b);
    return st;
}

terse_status_t terse_gc_decode_vector(const terse_gc_t *gc, const uint64_t *set, int flags, double *a)
{
    if (!gc || !set || !a)
        return TERSE_ERR_INVALID_ARG;
    memset(a, 0, sizeof(double) * (size_t)gc->n);
    return gc->scheme == TERSE_GC_FRACTIONAL ? fractional_decode(gc, set, flags, a) : cyclic_decode(gc, set, a);
}
