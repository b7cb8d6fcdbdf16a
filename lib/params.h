/* params.h - public parameter structs that can grow: each starts with
 * size_t struct_size (set by its _init function); a caller compiled against
 * an older header passes a smaller struct, whose missing fields keep their
 * defaults. 0 means the layout of the current header. */
#ifndef TERSE_PARAMS_H
#define TERSE_PARAMS_H

#include <stddef.h>
#include <string.h>

/* dst holds the defaults; copy what the caller's struct has over them. */
static inline void terse__params_copy(void *dst, const void *src, size_t full)
{
    size_t n;
    memcpy(&n, src, sizeof(n));
    if (n == 0 || n > full)
        n = full;
    memcpy(dst, src, n);
}

#endif
