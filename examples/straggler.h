/*
 * straggler.h - straggler injection for the examples and benchmarks (never
 * inside the library): which ranks are slow at a step, and by how much.
 *
 * A spec is "none", "fixed:K" (the last K ranks are slow at every step) or
 * "random:K" (K ranks drawn per step from a seed every rank shares, so all
 * agree who is slow). A slow rank takes `factor` times its compute time plus
 * `delay` seconds (straggler_extra);
 * the extra time is spent in terse_partial_wait_decision, so a rank the
 * step no longer needs stops early - as a real straggler that checks for
 * cancellation between layers would.
 */
#ifndef TERSE_EXAMPLES_STRAGGLER_H
#define TERSE_EXAMPLES_STRAGGLER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int random; /* 0: fixed set */
    int k;      /* slow ranks per step */
    double factor, delay;
    uint64_t seed;
} straggler_t;

/* The extra time a slow rank takes after computing for `compute` seconds. */
static inline double straggler_extra(const straggler_t *s, double compute)
{
    return (s->factor - 1) * compute + s->delay;
}

/* 0, or -1 for a malformed spec. */
static inline int straggler_parse(const char *spec, double factor, double delay, uint64_t seed, straggler_t *s)
{
    memset(s, 0, sizeof(*s));
    s->factor = factor, s->delay = delay, s->seed = seed;
    if (!spec || !strcmp(spec, "none"))
        return 0;
    char *end;
    if (!strncmp(spec, "fixed:", 6))
        s->k = (int)strtol(spec + 6, &end, 10);
    else if (!strncmp(spec, "random:", 7))
        s->random = 1, s->k = (int)strtol(spec + 7, &end, 10);
    else
        return -1;
    return *end || s->k < 0 || !(factor >= 1) || !(delay >= 0) ? -1 : 0;
}

static inline uint64_t straggler_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* 1 when `rank` of n is slow at `step`. */
static inline int straggler_is_slow(const straggler_t *s, int rank, int n, uint64_t step)
{
    if (s->k <= 0)
        return 0;
    if (!s->random)
        return rank >= n - s->k;
    /* a partial Fisher-Yates shuffle of the ranks, the same on every rank */
    int perm[1024];
    if (n > 1024)
        return 0;
    for (int i = 0; i < n; i++)
        perm[i] = i;
    uint64_t z = straggler_mix(s->seed ^ (step * 0x100000001b3ull));
    for (int i = 0; i < s->k && i < n; i++) {
        z = straggler_mix(z);
        int j = i + (int)(z % (uint64_t)(n - i)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
        if (perm[i] == rank)
            return 1;
    }
    return 0;
}

#endif
