/* dtype.h - element types, half-precision conversion and reduction kernels. */
#ifndef TERSE_DTYPE_H
#define TERSE_DTYPE_H

#include "terse.h"

#include <stddef.h>
#include <stdint.h>

float terse__half_to_float(uint16_t h);
uint16_t terse__float_to_half(float f);   /* round to nearest even, overflow -> inf */
float terse__bf16_to_float(uint16_t h);
uint16_t terse__float_to_bf16(float f);   /* round to nearest even, NaN stays NaN */

/* The same conversions over arrays (F16C for fp16 when the CPU has it; the
 * same bits either way). terse__dtype_set_simd(0) forces the scalar loops,
 * for tests. */
void terse__half_to_float_n(float *out, const uint16_t *in, size_t n);
void terse__float_to_half_n(uint16_t *out, const float *in, size_t n);
void terse__bf16_to_float_n(float *out, const uint16_t *in, size_t n);
void terse__float_to_bf16_n(uint16_t *out, const float *in, size_t n);
void terse__dtype_set_simd(int on);

/*
 * dst[i] = left op right over count elements, where (left, right) is
 * (src, dst) when src_first is set, else (dst, src). Callers on different
 * ranks pass the operands in the same rank order, so even NaN payloads and
 * signed zeros come out bit-identical everywhere. src and dst do not overlap.
 */
void terse__reduce(terse_dtype_t dtype, terse_op_t op, void *dst, const void *src, size_t count,
                   int src_first);

/* dst[i] = a[i] op b[i] (b op a when b_first): the reduction of an incoming
 * chunk b with a local input a, in one pass. dst may equal a; b overlaps neither. */
void terse__reduce3(terse_dtype_t dtype, terse_op_t op, void *dst, const void *a, const void *b,
                    size_t count, int b_first);

/* buf[i] /= n: the final step of TERSE_AVG. Integers truncate toward zero. */
void terse__scale_avg(terse_dtype_t dtype, void *buf, size_t count, int n);

#endif
