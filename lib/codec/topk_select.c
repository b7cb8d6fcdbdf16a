/*
 * topk_select.c - top-k selection by magnitude: exact (quickselect over a
 * copy of the magnitudes) and sampled (a threshold from a strided sample,
 * one pass collecting the candidates at or above it, then the exact
 * selection among the candidates). Whenever at least k values reach the
 * threshold, the k-th largest magnitude is among the candidates with all
 * its ties, so both give the same indices: the k largest magnitudes, ties
 * to the lower index, ascending. Too few candidates: the sampled variant
 * falls back to the exact one.
 */
#include "topk_select.h"
#include "../log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* k-th largest of v[0..n) (1-based k), by quickselect with a median-of-three
 * pivot and a three-way partition (runs of equal values cannot stall it);
 * v is scrambled. */
float terse__kth_largest(float *v, size_t n, size_t k)
{
    size_t lo = 0, hi = n, want = k - 1; /* answer lies in v[lo..hi) */
    while (hi - lo > 1) {
        float a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi - 1];
        float pivot = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        size_t gt = lo, i = lo, lt = hi; /* [greater | equal | less] */
        while (i < lt) {
            if (v[i] > pivot) {
                float t = v[i]; v[i] = v[gt]; v[gt] = t;
                gt++, i++;
            } else if (v[i] < pivot) {
                lt--;
                float t = v[i]; v[i] = v[lt]; v[lt] = t;
            } else {
                i++;
            }
        }
        if (want < gt)
            hi = gt;
        else if (want < lt)
            return pivot;
        else
            lo = lt;
    }
    return v[lo];
}

/* Given the k-th largest magnitude thr, write the k indices (ascending) of
 * the values above it and the lowest-index ties. cand: candidate indices
 * (NULL: all of 0..n). */
static void take(const float *x, const uint32_t *cand, size_t m, size_t k, float thr, uint32_t *idx)
{
    size_t above = 0;
    for (size_t j = 0; j < m; j++)
        above += fabsf(x[cand ? cand[j] : j]) > thr;
    size_t ties = k - above, w = 0;
    for (size_t j = 0; j < m && w < k; j++) {
        uint32_t i = cand ? cand[j] : (uint32_t)j;
        float a = fabsf(x[i]);
        if (a > thr || (a == thr && ties && ties--))
            idx[w++] = i;
    }
}

terse_status_t terse__topk_exact(const float *x, size_t n, size_t k, uint32_t *idx)
{
    if (!k)
        return TERSE_OK;
    float *mag = malloc(n * sizeof(float));
    if (!mag)
        return TERSE_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++)
        mag[i] = fabsf(x[i]);
    float thr = terse__kth_largest(mag, n, k);
    free(mag);
    take(x, NULL, n, k, thr, idx);
    return TERSE_OK;
}

terse_status_t terse__topk_sampled(const float *x, size_t n, size_t k, uint32_t *idx)
{
    if (!k)
        return TERSE_OK;
    if (n < 8192 || k * 4 > n)
        return terse__topk_exact(x, n, k, idx);
    /* sample: 4096 values at a fixed stride; aim the threshold at twice the
     * expected k so that it lands below the true k-th value w.h.p. */
    size_t m = 4096;
    float sample[4096];
    for (size_t j = 0; j < m; j++)
        sample[j] = fabsf(x[j * (n / m)]);
    size_t want = (size_t)((double)k / (double)n * (double)m * 2.0) + 8;
    if (want > m)
        return terse__topk_exact(x, n, k, idx);
    float thr = terse__kth_largest(sample, m, want);
    size_t cap = 4 * k + 1024, cnt = 0;
    uint32_t *cand = malloc(cap * sizeof(uint32_t));
    if (!cand)
        return TERSE_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++) {
        if (fabsf(x[i]) >= thr) {
            if (cnt == cap)
                break; /* threshold too low: many more candidates than expected */
            cand[cnt++] = (uint32_t)i;
        }
    }
    if (cnt < k || cnt == cap) {
        free(cand);
        return terse__topk_exact(x, n, k, idx);
    }
    float *mag = malloc(cnt * sizeof(float));
    if (!mag) {
        free(cand);
        return TERSE_ERR_NO_MEMORY;
    }
    for (size_t j = 0; j < cnt; j++)
        mag[j] = fabsf(x[cand[j]]);
    float kth = terse__kth_largest(mag, cnt, k);
    free(mag);
    take(x, cand, cnt, k, kth, idx);
    free(cand);
    return TERSE_OK;
}

size_t terse_topk_count(size_t n, double ratio)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)floor(ratio * (double)n);
    return k < 1 ? 1 : k > n ? n : k;
}

terse_status_t terse_topk_select(const float *x, size_t n, size_t k, int sampled, uint32_t *idx)
{
    if ((!x && n) || (!idx && k) || k > n || n > UINT32_MAX)
        return TERSE_ERR_INVALID_ARG;
    return sampled ? terse__topk_sampled(x, n, k, idx) : terse__topk_exact(x, n, k, idx);
}

terse_status_t terse_topk_select_bucket(const float *x, const size_t *offsets, int ntensors, double ratio,
                                        int sampled, uint32_t *idx, size_t *k_out)
{
    if (!x || !offsets || ntensors < 0 || !idx || !k_out || !(ratio > 0 && ratio <= 1))
        return TERSE_ERR_INVALID_ARG;
    size_t w = 0;
    for (int t = 0; t < ntensors; t++) {
        size_t lo = offsets[t], hi = offsets[t + 1];
        if (hi < lo || hi - lo > UINT32_MAX || hi > UINT32_MAX)
            return TERSE_ERR_INVALID_ARG;
        size_t k = terse_topk_count(hi - lo, ratio);
        terse_status_t st = sampled ? terse__topk_sampled(x + lo, hi - lo, k, idx + w)
                                    : terse__topk_exact(x + lo, hi - lo, k, idx + w);
        if (st != TERSE_OK)
            return st;
        for (size_t j = 0; j < k; j++)
            idx[w + j] += (uint32_t)lo;
        w += k;
    }
    *k_out = w;
    return TERSE_OK;
}
