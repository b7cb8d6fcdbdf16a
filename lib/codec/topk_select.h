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

#endif
