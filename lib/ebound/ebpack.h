/*
 * ebpack.h - the integer codes of the error-bounded allreduce, lossless.
 *
 * A frame holds up to TERSE_EB_FRAME values: one width byte w, the first
 * value zigzagged as a varint, then the n - 1 differences to the previous
 * value, zigzagged and packed in w bits each, least significant first, in
 * whole 32-bit little-endian words. Smooth data have small differences, so
 * w is small; any |v| < 2^53 round-trips exactly (w <= 56).
 */
#ifndef TERSE_EBPACK_H
#define TERSE_EBPACK_H

#include <stddef.h>
#include <stdint.h>

#define TERSE_EB_FRAME 256

/** Worst-case bytes of n values in frames. */
size_t terse__eb_pack_bound(size_t n);
/** Pack one frame of n (1..TERSE_EB_FRAME) values; returns the bytes written. */
size_t terse__eb_pack_frame(const int64_t *v, int n, uint8_t *out);
/** Unpack one frame of n values from [in, end) into v; returns the byte after
 * it, or NULL when the bytes are not a well-formed frame of n values. */
const uint8_t *terse__eb_unpack_frame(const uint8_t *in, const uint8_t *end, int n, int64_t *v);

#endif
