/*
 * dtype.c - reduction kernels. Each (dtype, op) pair is a plain loop over
 * restrict pointers so the compiler vectorises it (-O3 on x86-64 emits SSE/AVX
 * for the float and int sums). 16-bit floats are widened to float32 a block at
 * a time, reduced, and rounded back once per reduction step.
 */
#include "dtype.h"

#include <math.h>
#include <string.h>

static const size_t dtype_sizes[TERSE_DTYPE_COUNT] = {4, 8, 2, 2, 4, 8};
static const char *dtype_names[TERSE_DTYPE_COUNT] = {"float32", "float64", "float16",
                                                     "bfloat16", "int32", "int64"};
static const char *op_names[TERSE_OP_COUNT] = {"sum", "prod", "min", "max", "avg"};

size_t terse_dtype_size(terse_dtype_t d) { return (unsigned)d < TERSE_DTYPE_COUNT ? dtype_sizes[d] : 0; }
const char *terse_dtype_name(terse_dtype_t d) { return (unsigned)d < TERSE_DTYPE_COUNT ? dtype_names[d] : "invalid"; }
const char *terse_op_name(terse_op_t o) { return (unsigned)o < TERSE_OP_COUNT ? op_names[o] : "invalid"; }

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float terse__half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) /* inf, or NaN made quiet (as F16C does) */
        return u2f(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0));
    if (exp == 0) {
        /* subnormal or zero: value = man * 2^-24, exact in float32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t terse__float_to_half(float f)
{
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf or NaN (keep NaN quiet and non-zero) */
        return sign | 0x7c00 | (a > 0x7f800000u ? (0x200 | ((a >> 13) & 0x3ff)) : 0);
    if (a >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return sign | 0x7c00;
    if (a < 0x38800000u) {
        /* result is subnormal in half: round a * 2^24 to an integer, ties to even */
        float v = u2f(a) * 0x1p24f;
        return sign | (uint16_t)lrintf(v); /* default rounding mode: nearest even */
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1); /* round to nearest even on bit 13 */
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

float terse__bf16_to_float(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t terse__float_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN, payload kept non-zero */
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

/* ---- array conversions -------------------------------------------------
 * fp16 uses F16C (vcvtph2ps / vcvtps2ph, round to nearest even) when the CPU
 * has it: the same bits as the scalar functions above, NaNs included
 * (quieted, payload truncated), which tests/test_unit checks. bf16 is integer
 * code the compiler vectorises. */
static int f16c_level = -1;

static int cpu_has_f16c(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

static inline int use_f16c(void)
{
    if (f16c_level < 0)
        f16c_level = cpu_has_f16c();
    return f16c_level;
}

void terse__dtype_set_simd(int on) { f16c_level = on ? cpu_has_f16c() : 0; }

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define F16C_FN __attribute__((target("avx2,f16c")))

F16C_FN static void half_to_float_f16c(float *o, const uint16_t *in, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(o + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + i))));
    for (; i < n; i++)
        o[i] = terse__half_to_float(in[i]);
}

F16C_FN static void float_to_half_f16c(uint16_t *o, const float *in, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(o + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++)
        o[i] = terse__float_to_half(in[i]);
}
#endif

void terse__half_to_float_n(float *o, const uint16_t *in, size_t n)
{
#ifdef F16C_FN
    if (use_f16c()) {
        half_to_float_f16c(o, in, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        o[i] = terse__half_to_float(in[i]);
}

void terse__float_to_half_n(uint16_t *o, const float *in, size_t n)
{
#ifdef F16C_FN
    if (use_f16c()) {
        float_to_half_f16c(o, in, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        o[i] = terse__float_to_half(in[i]);
}

void terse__bf16_to_float_n(float *o, const uint16_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++)
        o[i] = u2f((uint32_t)in[i] << 16);
}

void terse__float_to_bf16_n(uint16_t *o, const float *in, size_t n)
{
    for (size_t i = 0; i < n; i++) { /* terse__float_to_bf16, branch-free */
        uint32_t u = f2u(in[i]);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1)) >> 16, q = (u >> 16) | 0x40;
        o[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

/* Deterministic min/max: any NaN gives the canonical NaN, -0 < +0. */
#define FMIN(a, b) (isnan(a) || isnan(b) ? NAN : (a) < (b) ? (a) : (b) < (a) ? (b) : signbit(a) ? (a) : (b))
#define FMAX(a, b) (isnan(a) || isnan(b) ? NAN : (a) > (b) ? (a) : (b) > (a) ? (b) : signbit(a) ? (b) : (a))
#define IMIN(a, b) ((a) < (b) ? (a) : (b))
#define IMAX(a, b) ((a) > (b) ? (a) : (b))
#define ADD(a, b) ((a) + (b))
#define MUL(a, b) ((a) * (b))
/* Integer sums and products wrap (two's complement) instead of being UB. */
#define IADD32(a, b) ((int32_t)((uint32_t)(a) + (uint32_t)(b)))
#define IMUL32(a, b) ((int32_t)((uint32_t)(a) * (uint32_t)(b)))
#define IADD64(a, b) ((int64_t)((uint64_t)(a) + (uint64_t)(b)))
#define IMUL64(a, b) ((int64_t)((uint64_t)(a) * (uint64_t)(b)))

#define DEFINE_KERNEL(name, T, F)                                                        \
    static void name(T *restrict d, const T *restrict s, size_t n, int src_first)         \
    {                                                                                    \
        if (src_first)                                                                   \
            for (size_t i = 0; i < n; i++)                                               \
                d[i] = F(s[i], d[i]);                                                    \
        else                                                                             \
            for (size_t i = 0; i < n; i++)                                               \
                d[i] = F(d[i], s[i]);                                                    \
    }

/* 3-operand form: d = a op b (b op a with b_first), one pass over memory. */
#define DEFINE_KERNEL3(name, T, F)                                                       \
    static void name##3(T *restrict d, const T *restrict a, const T *restrict b, size_t n, \
                        int b_first)                                                     \
    {                                                                                    \
        if (b_first)                                                                     \
            for (size_t i = 0; i < n; i++)                                               \
                d[i] = F(b[i], a[i]);                                                    \
        else                                                                             \
            for (size_t i = 0; i < n; i++)                                               \
                d[i] = F(a[i], b[i]);                                                    \
    }

/* 16-bit floats go a block at a time: widen (exact), reduce in float32,
 * round back to nearest even once per element - the same bits as converting
 * element by element, with conversion loops that vectorise. */
#define HBLK 512
#define DEFINE_HALF_KERNEL(name, F, WIDEN, NARROW)                                       \
    static void name(uint16_t *restrict d, const uint16_t *restrict s, size_t n,         \
                     int src_first)                                                      \
    {                                                                                    \
        float a[HBLK], b[HBLK];                                                          \
        for (size_t o = 0; o < n; o += HBLK) {                                           \
            size_t m = n - o < HBLK ? n - o : HBLK;                                      \
            WIDEN(a, d + o, m);                                                          \
            WIDEN(b, s + o, m);                                                          \
            if (src_first)                                                               \
                for (size_t i = 0; i < m; i++)                                           \
                    a[i] = F(b[i], a[i]);                                                \
            else                                                                         \
                for (size_t i = 0; i < m; i++)                                           \
                    a[i] = F(a[i], b[i]);                                                \
            NARROW(d + o, a, m);                                                         \
        }                                                                                \
    }                                                                                    \
    /* d = a op b (b op a with b_first); d may be a, block for block */                  \
    static void name##3(uint16_t *d, const uint16_t *a, const uint16_t *restrict b,      \
                        size_t n, int b_first)                                           \
    {                                                                                    \
        float x[HBLK], y[HBLK];                                                          \
        for (size_t o = 0; o < n; o += HBLK) {                                           \
            size_t m = n - o < HBLK ? n - o : HBLK;                                      \
            WIDEN(x, a + o, m);                                                          \
            WIDEN(y, b + o, m);                                                          \
            if (b_first)                                                                 \
                for (size_t i = 0; i < m; i++)                                           \
                    x[i] = F(y[i], x[i]);                                                \
            else                                                                         \
                for (size_t i = 0; i < m; i++)                                           \
                    x[i] = F(x[i], y[i]);                                                \
            NARROW(d + o, x, m);                                                         \
        }                                                                                \
    }

#define DEFINE_FLOAT_OPS(pfx, T)                                                         \
    DEFINE_KERNEL(pfx##_sum, T, ADD)                                                     \
    DEFINE_KERNEL(pfx##_prod, T, MUL)                                                    \
    DEFINE_KERNEL(pfx##_min, T, FMIN)                                                    \
    DEFINE_KERNEL(pfx##_max, T, FMAX)                                                    \
    DEFINE_KERNEL3(pfx##_sum, T, ADD)                                                    \
    DEFINE_KERNEL3(pfx##_prod, T, MUL)                                                   \
    DEFINE_KERNEL3(pfx##_min, T, FMIN)                                                   \
    DEFINE_KERNEL3(pfx##_max, T, FMAX)
#define DEFINE_HALF_OPS(pfx, WIDEN, NARROW)                                              \
    DEFINE_HALF_KERNEL(pfx##_sum, ADD, WIDEN, NARROW)                                    \
    DEFINE_HALF_KERNEL(pfx##_prod, MUL, WIDEN, NARROW)                                   \
    DEFINE_HALF_KERNEL(pfx##_min, FMIN, WIDEN, NARROW)                                   \
    DEFINE_HALF_KERNEL(pfx##_max, FMAX, WIDEN, NARROW)

DEFINE_FLOAT_OPS(f32, float)
DEFINE_FLOAT_OPS(f64, double)
DEFINE_HALF_OPS(f16, terse__half_to_float_n, terse__float_to_half_n)
DEFINE_HALF_OPS(bf16, terse__bf16_to_float_n, terse__float_to_bf16_n)
#define DEFINE_INT_OPS(pfx, T, ADDF, MULF)                                               \
    DEFINE_KERNEL(pfx##_sum, T, ADDF)                                                    \
    DEFINE_KERNEL(pfx##_prod, T, MULF)                                                   \
    DEFINE_KERNEL(pfx##_min, T, IMIN)                                                    \
    DEFINE_KERNEL(pfx##_max, T, IMAX)                                                    \
    DEFINE_KERNEL3(pfx##_sum, T, ADDF)                                                   \
    DEFINE_KERNEL3(pfx##_prod, T, MULF)                                                  \
    DEFINE_KERNEL3(pfx##_min, T, IMIN)                                                   \
    DEFINE_KERNEL3(pfx##_max, T, IMAX)
DEFINE_INT_OPS(i32, int32_t, IADD32, IMUL32)
DEFINE_INT_OPS(i64, int64_t, IADD64, IMUL64)

typedef void (*kernel_fn)(void *, const void *, size_t, int);
#define K(f) ((kernel_fn)(f))
/* AVG reduces like SUM; the division happens once, in terse__scale_avg. */
static const kernel_fn kernels[TERSE_DTYPE_COUNT][TERSE_OP_COUNT] = {
    [TERSE_FLOAT32] = {K(f32_sum), K(f32_prod), K(f32_min), K(f32_max), K(f32_sum)},
    [TERSE_FLOAT64] = {K(f64_sum), K(f64_prod), K(f64_min), K(f64_max), K(f64_sum)},
    [TERSE_FLOAT16] = {K(f16_sum), K(f16_prod), K(f16_min), K(f16_max), K(f16_sum)},
    [TERSE_BFLOAT16] = {K(bf16_sum), K(bf16_prod), K(bf16_min), K(bf16_max), K(bf16_sum)},
    [TERSE_INT32] = {K(i32_sum), K(i32_prod), K(i32_min), K(i32_max), K(i32_sum)},
    [TERSE_INT64] = {K(i64_sum), K(i64_prod), K(i64_min), K(i64_max), K(i64_sum)},
};

void terse__reduce(terse_dtype_t dtype, terse_op_t op, void *dst, const void *src, size_t count,
                   int src_first)
{
    kernels[dtype][op](dst, src, count, src_first);
}

typedef void (*kernel3_fn)(void *, const void *, const void *, size_t, int);
#define K3(f) ((kernel3_fn)(f##3))
static const kernel3_fn kernels3[TERSE_DTYPE_COUNT][TERSE_OP_COUNT] = {
    [TERSE_FLOAT32] = {K3(f32_sum), K3(f32_prod), K3(f32_min), K3(f32_max), K3(f32_sum)},
    [TERSE_FLOAT64] = {K3(f64_sum), K3(f64_prod), K3(f64_min), K3(f64_max), K3(f64_sum)},
    [TERSE_FLOAT16] = {K3(f16_sum), K3(f16_prod), K3(f16_min), K3(f16_max), K3(f16_sum)},
    [TERSE_BFLOAT16] = {K3(bf16_sum), K3(bf16_prod), K3(bf16_min), K3(bf16_max), K3(bf16_sum)},
    [TERSE_INT32] = {K3(i32_sum), K3(i32_prod), K3(i32_min), K3(i32_max), K3(i32_sum)},
    [TERSE_INT64] = {K3(i64_sum), K3(i64_prod), K3(i64_min), K3(i64_max), K3(i64_sum)},
};

void terse__reduce3(terse_dtype_t dtype, terse_op_t op, void *dst, const void *a, const void *b,
                    size_t count, int b_first)
{
    if (dst == a) /* in place: the 2-operand loops */
        kernels[dtype][op](dst, b, count, b_first);
    else
        kernels3[dtype][op](dst, a, b, count, b_first);
}

void terse__scale_avg(terse_dtype_t dtype, void *buf, size_t count, int n)
{
    switch (dtype) {
    case TERSE_FLOAT32: {
        float *p = buf;
        for (size_t i = 0; i < count; i++)
            p[i] /= (float)n;
        break;
    }
    case TERSE_FLOAT64: {
        double *p = buf;
        for (size_t i = 0; i < count; i++)
            p[i] /= (double)n;
        break;
    }
    case TERSE_FLOAT16:
    case TERSE_BFLOAT16: {
        uint16_t *p = buf;
        float f[HBLK];
        int h = dtype == TERSE_FLOAT16;
        for (size_t o = 0; o < count; o += HBLK) {
            size_t m = count - o < HBLK ? count - o : HBLK;
            (h ? terse__half_to_float_n : terse__bf16_to_float_n)(f, p + o, m);
            for (size_t i = 0; i < m; i++)
                f[i] /= (float)n;
            (h ? terse__float_to_half_n : terse__float_to_bf16_n)(p + o, f, m);
        }
        break;
    }
    case TERSE_INT32: {
        int32_t *p = buf;
        for (size_t i = 0; i < count; i++)
            p[i] /= n;
        break;
    }
    case TERSE_INT64: {
        int64_t *p = buf;
        for (size_t i = 0; i < count; i++)
            p[i] /= n;
        break;
    }
    default:
        break;
    }
}
