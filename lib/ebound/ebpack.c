/* ebpack.c - delta, zigzag and fixed-width bit packing per frame (ebpack.h). */
#include "ebpack.h"

#include <string.h>

static inline uint64_t zig(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static inline int64_t unzig(uint64_t u) { return (int64_t)(u >> 1) ^ -(int64_t)(u & 1); }

size_t terse__eb_pack_bound(size_t n)
{
    size_t frames = (n + TERSE_EB_FRAME - 1) / TERSE_EB_FRAME;
    /* width byte, 10-byte varint, 64 bits per difference at most */
    return frames * (1 + 10 + 4) + n * 8;
}

typedef struct {
    uint8_t *p;
    uint64_t acc;
    int nb;
} bitw_t;

static inline void put32(bitw_t *b, uint64_t v, int w) /* w <= 32 */
{
    b->acc |= v << b->nb;
    b->nb += w;
    if (b->nb >= 32) {
        uint32_t word = (uint32_t)b->acc;
        memcpy(b->p, &word, 4);
        b->p += 4;
        b->acc >>= 32;
        b->nb -= 32;
    }
}

static inline void put(bitw_t *b, uint64_t v, int w)
{
    if (w > 32) {
        put32(b, v & 0xffffffffu, 32);
        v >>= 32;
        w -= 32;
    }
    put32(b, v, w);
}

size_t terse__eb_pack_frame(const int64_t *v, int n, uint8_t *out)
{
    uint64_t d[TERSE_EB_FRAME], any = 0;
    for (int i = 1; i < n; i++)
        any |= d[i] = zig(v[i] - v[i - 1]);
    int w = any ? 64 - __builtin_clzll(any) : 0;
    uint8_t *p = out;
    *p++ = (uint8_t)w;
    for (uint64_t z = zig(v[0]);; z >>= 7) {
        if (z < 0x80) {
            *p++ = (uint8_t)z;
            break;
        }
        *p++ = (uint8_t)(z | 0x80);
    }
    bitw_t b = {p, 0, 0};
    if (w > 32)
        for (int i = 1; i < n; i++)
            put(&b, d[i], w);
    else if (w) /* the common case: one shift and at most one store per value */
        for (int i = 1; i < n; i++)
            put32(&b, d[i], w);
    if (b.nb)
        put32(&b, 0, 32 - b.nb);
    return (size_t)(b.p - out);
}

typedef struct {
    const uint8_t *p;
    uint64_t acc;
    int nb;
} bitr_t;

static inline uint64_t get32(bitr_t *b, int w) /* w <= 32 */
{
    if (b->nb < w) {
        uint32_t word;
        memcpy(&word, b->p, 4);
        b->p += 4;
        b->acc |= (uint64_t)word << b->nb;
        b->nb += 32;
    }
    uint64_t v = b->acc & ((w == 32) ? 0xffffffffu : ((1ull << w) - 1));
    b->acc >>= w;
    b->nb -= w;
    return v;
}

const uint8_t *terse__eb_unpack_frame(const uint8_t *in, const uint8_t *end, int n, int64_t *v)
{
    if (n < 1 || n > TERSE_EB_FRAME || end - in < 2)
        return NULL;
    int w = *in++;
    if (w > 56)
        return NULL;
    uint64_t z = 0;
    for (int s = 0;; s += 7) {
        if (in >= end || s > 63)
            return NULL;
        uint8_t c = *in++;
        z |= (uint64_t)(c & 0x7f) << s;
        if (!(c & 0x80))
            break;
    }
    size_t words = ((size_t)(n - 1) * (size_t)w + 31) / 32;
    if ((size_t)(end - in) < words * 4)
        return NULL;
    int64_t x = unzig(z);
    v[0] = x;
    bitr_t b = {in, 0, 0};
    /* sums wrap on malformed input, never undefined behaviour */
    if (w > 32) {
        for (int i = 1; i < n; i++) {
            uint64_t u = get32(&b, 32);
            u |= get32(&b, w - 32) << 32;
            v[i] = x = (int64_t)((uint64_t)x + (uint64_t)unzig(u));
        }
    } else if (w) {
        for (int i = 1; i < n; i++)
            v[i] = x = (int64_t)((uint64_t)x + (uint64_t)unzig(get32(&b, w)));
    } else {
        for (int i = 1; i < n; i++)
            v[i] = x;
    }
    return in + words * 4;
}
