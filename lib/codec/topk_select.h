/* topk_select.h - top-k selection by magnitude (topk_select.c), below the
 * codecs that use it (topk) and the sparse collectives (sparse, SASG). */
#ifndef TERSE_TOPK_SELECT_H
#define TERSE_TOPK_SELECT_H

#include "terse.h"

#include <stddef.h>
#include <stdint.h>

float terse__kth_largest(float *v, size_t n, size_t k);
terse_status_t terse__topk_exact(const float *x, size_t n, size_t k, uint32_t *idx);
terse_status_t terse__topk_sampled(const float *x, size_t n, size_t k, uint32_t *idx);

/*
 * The codec's top-k of p = u + e (e NULL: p = u) in one pass over memory:
 * p is written to p_out when e is given (error feedback keeps it), checked
 * finite (TERSE_ERR_INVALID_ARG otherwise) and filtered against a sampled
 * threshold in the same loop; the exact selection then runs among the
 * candidates only. Same indices as terse__topk_exact on p.
 */
terse_status_t terse__topk_fused(const float *u, const float *e, float *p_out, size_t n, size_t k, uint32_t *idx);

#endif
