/*
 * terse_compress_spec.h - the compressed modes an MPI code opts into, as
 * written in TERSE_PMPI_COMPRESS or the "terse_compress" MPI_Info hint:
 *   none            exact (the default)
 *   abs:E           error-bounded, |result - exact sum| <= E on every element
 *   rel:R           error-bounded, <= R x (max - min of all ranks' inputs)
 *   CODEC           a learning-style codec of the compressed allreduce
 *                   (cnat8, natdither, qsgd, sign1, fp16, bf16...): no bound
 * optionally followed by ",min=BYTES" (smallest call compressed; default 1 MiB).
 * Independent of MPI, so it is unit-tested alone.
 */
#ifndef TERSE_COMPRESS_SPEC_H
#define TERSE_COMPRESS_SPEC_H

#include <stddef.h>

typedef enum { TERSE_CZ_NONE = 0, TERSE_CZ_ABS, TERSE_CZ_REL, TERSE_CZ_CODEC } terse_cz_kind_t;

typedef struct terse_compress_spec {
    terse_cz_kind_t kind;
    double bound;
    char codec[24];
    size_t min_bytes;
} terse_compress_spec_t;

#define TERSE_CZ_MIN_DEFAULT ((size_t)1 << 20)

/** "64K", "1M", "1.5GiB", "4096" -> bytes: 0 on success, -1 for anything else. */
int terse__size_parse(const char *text, size_t *out);
/** 0 on success; -1 (and *out unchanged) for text that is not a mode. */
int terse__compress_spec_parse(const char *text, terse_compress_spec_t *out);
/** "rel:1e-04,min=1048576" - the canonical text (equal specs, equal text). */
void terse__compress_spec_format(const terse_compress_spec_t *s, char *buf, size_t len);

#endif
