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

/* Whole blocks of the fused pass: the candidate buffers have a block of
 * slack, so the loop appends without a bound check. */
#define FUSED_BLOCK 4096
#define FLT_BIG 3.40282347e38f

/* p = u (+ e) into p (when e), finite check and candidates >= thr (index and
 * magnitude), in one loop. Groups of 8 whose largest magnitude is below thr -
 * most of them - take the vector path only; the others append branch-free.
 * Returns the candidate count, or more than cap once they overflowed; *gt
 * and *ge count the magnitudes above and at-or-above thr either way. */
static size_t fused_pass(const float *u, const float *e, float *p, size_t n, float thr, uint32_t *cand,
                         float *cmag, size_t cap, int *bad_out, size_t *gt_out, size_t *ge_out)
{
    size_t cnt = 0, gt = 0, ge = 0;
    int bad = 0;
    size_t i = 0;
    for (size_t lo = 0; lo < n; lo += FUSED_BLOCK) {
        size_t hi = lo + FUSED_BLOCK < n ? lo + FUSED_BLOCK : n;
        int full = cnt > cap; /* too many: finish p and the check, no more candidates */
        for (i = lo; i + 8 <= hi; i += 8) {
            float a[8], mx = 0;
            for (int j = 0; j < 8; j++) {
                float v = e ? u[i + j] + e[i + j] : u[i + j];
                if (e)
                    p[i + j] = v;
                a[j] = fabsf(v);
                bad |= !(a[j] <= FLT_BIG); /* NaN and infinity */
                mx = a[j] > mx ? a[j] : mx;
            }
            if (mx < thr)
                continue;
            for (int j = 0; j < 8; j++) {
                gt += a[j] > thr;
                ge += a[j] >= thr;
            }
            if (full)
                continue;
            for (int j = 0; j < 8; j++) {
                cand[cnt] = (uint32_t)(i + (size_t)j);
                cmag[cnt] = a[j];
                cnt += a[j] >= thr;
            }
        }
        for (; i < hi; i++) {
            float v = e ? u[i] + e[i] : u[i], a = fabsf(v);
            if (e)
                p[i] = v;
            bad |= !(a <= FLT_BIG);
            gt += a > thr;
            ge += a >= thr;
            if (full)
                continue;
            cand[cnt] = (uint32_t)i;
            cmag[cnt] = a;
            cnt += a >= thr;
        }
    }
    *bad_out = bad;
    *gt_out = gt, *ge_out = ge;
    return cnt;
}

/* Fewer than k magnitudes above thr but at least k at it: thr is the k-th
 * largest, so the answer is everything above it plus the lowest-index ties -
 * one more pass, no selection (inputs with many equal values). */
static void take_at_threshold(const float *p, size_t n, float thr, size_t gt, size_t k, uint32_t *idx)
{
    size_t ties = k - gt, w = 0;
    for (size_t i = 0; i < n && w < k; i++) {
        float a = fabsf(p[i]);
        if (a > thr || (a == thr && ties && ties--))
            idx[w++] = (uint32_t)i;
    }
}

/* The k of the cnt candidates with the largest magnitudes, ties to the lower
 * index (candidates are in index order), compacted into idx. */
static terse_status_t take_candidates(uint32_t *cand, const float *cmag, size_t cnt, size_t k, uint32_t *idx)
{
    float *scratch = malloc(cnt * sizeof(float));
    if (!scratch)
        return TERSE_ERR_NO_MEMORY;
    memcpy(scratch, cmag, cnt * sizeof(float));
    float kth = terse__kth_largest(scratch, cnt, k);
    free(scratch);
    size_t above = 0;
    for (size_t j = 0; j < cnt; j++)
        above += cmag[j] > kth;
    size_t ties = k - above, w = 0;
    for (size_t j = 0; j < cnt; j++) { /* in place: w <= j */
        int eq = cmag[j] == kth, keep = (cmag[j] > kth) | (eq & (ties > 0));
        ties -= (size_t)(eq & keep);
        cand[w] = cand[j];
        w += (size_t)keep;
    }
    memcpy(idx, cand, k * sizeof(uint32_t));
    return TERSE_OK;
}

terse_status_t terse__topk_fused(const float *u, const float *e, float *p_out, size_t n, size_t k, uint32_t *idx)
{
    const float *p = e ? p_out : u;
    size_t m = 4096, want = n ? (size_t)((double)k / (double)n * (double)m * 2.0) + 8 : 0;
    if (n < 8192 || k * 4 > n || want > m) { /* small or dense: the exact selection */
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            float v = e ? u[i] + e[i] : u[i];
            if (e)
                p_out[i] = v;
            bad |= !isfinite(v);
        }
        return bad ? TERSE_ERR_INVALID_ARG : terse__topk_exact(p, n, k, idx);
    }
    /* threshold from a strided sample of p, aimed at twice the expected k */
    float sample[4096];
    for (size_t j = 0; j < m; j++) {
        size_t i = j * (n / m);
        sample[j] = fabsf(e ? u[i] + e[i] : u[i]);
    }
    float thr = terse__kth_largest(sample, m, want); /* a NaN here is caught by the pass */
    size_t cap = 4 * k + 1024;
    uint32_t *cand = malloc((cap + FUSED_BLOCK + 1) * sizeof(uint32_t));
    float *cmag = malloc((cap + FUSED_BLOCK + 1) * sizeof(float));
    if (!cand || !cmag) {
        free(cand), free(cmag);
        return TERSE_ERR_NO_MEMORY;
    }
    int bad;
    size_t gt, ge, cnt = fused_pass(u, e, p_out, n, thr, cand, cmag, cap, &bad, &gt, &ge);
    terse_status_t st = TERSE_OK;
    if (bad)
        st = TERSE_ERR_INVALID_ARG;
    else if (ge >= k && cnt <= cap)
        st = take_candidates(cand, cmag, cnt, k, idx);
    else if (ge >= k && gt < k)
        take_at_threshold(p, n, thr, gt, k, idx);
    else /* the sample misjudged: too few candidates, or too many above it */
        st = terse__topk_exact(p, n, k, idx);
    free(cand), free(cmag);
    return st;
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
