/* mls_vmath.c: exp over an array, branch-free so that GCC vectorises it.
 *
 * exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2, |r| <= ln2/2.
 *
 *  - Clamp: x is first limited to [-746, 710] (NaN passes through the two
 *    comparisons unchanged). Past those bounds exp over- or underflows
 *    anyway, and the clamp keeps n in [-1077, 1025], so the integer steps
 *    below cannot overflow.
 *  - n: x / ln2 + 1.5 * 2^52 rounds to an integer in the low mantissa bits
 *    (the "shift" trick: no float-to-int conversion, which is undefined in
 *    C for NaN); subtracting the shift gives n as an exact double.
 *  - r: Cody-Waite, ln 2 = LN2_HI + LN2_LO with LN2_HI carrying 32
 *    significant bits, so n * LN2_HI is exact for |n| < 2^21 and x - n LN2_HI
 *    is exact (the two are within a factor 2, Sterbenz); n LN2_LO (~1e-7)
 *    adds a rounding error below 2^-80 absolute.
 *  - exp(r): Taylor polynomial of degree 13, Horner form,
 *    1 + r (1 + r (1/2! + r (1/3! + ... + r / 13!))). The truncation error
 *    |r|^14 / 14! * e^|r| is below 6e-18 relative (0.05 ulp); the rounding of
 *    the 1/k! constants and of each Horner step keeps the total within about
 *    1 ulp (measured: tests/test_linear_vexp.py).
 *  - 2^n: n is split as n1 + n2 with n1 = round(n / 2), both in [-539, 539],
 *    and each 2^ni is built from its exponent bits. (p * 2^n1) is exact and
 *    normal, the second product rounds once, so a subnormal result is
 *    correctly scaled, and 2^1024 * p (x just below ln(DBL_MAX), n = 1024)
 *    needs no special case. Overflow gives +inf, underflow +0, NaN stays NaN.
 *
 * The kernel is compiled three times: plain C (SSE2 on x86-64, the build
 * has no -march), AVX2 + FMA and AVX-512F; the caller's CPU picks one at
 * run time. Only the FMA builds fuse the multiply-adds (ISO C mode keeps
 * GCC from contracting a * b + c on its own), so the last bit may differ
 * between CPUs.
 */
#include "mls_vmath.h"

#include <string.h>

#define MLS_VEXP_HI 710.0
#define MLS_VEXP_LO (-746.0)
#define MLS_VEXP_SHIFT 0x1.8p52
#define MLS_VEXP_INV_LN2 0x1.71547652b82fep0
#define MLS_VEXP_LN2_HI 0x1.62e42feep-1     /* 6.93147180369123816490e-01 */
#define MLS_VEXP_LN2_LO 0x1.a39ef35793c76p-33 /* 1.90821492927058770002e-10 */
/* Values processed per inner loop: a local copy of the input makes it
 * plain to the compiler that in-place use (y == x) cannot alias. */
#define MLS_VEXP_CHUNK 256

static inline uint64_t mls_vexp_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline double mls_vexp_from_bits(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

/* 2^n for an integer-valued double n in [-1022, 1023], given t = n + shift. */
static inline double mls_vexp_pow2(double t)
{
    return mls_vexp_from_bits((mls_vexp_bits(t) + 1023) << 52);
}

#define MLS_VEXP_MUL_ADD(a, b, c) ((a) * (b) + (c))

#define MLS_VEXP_DEFINE(NAME, ATTR, FMA)                                                 \
    ATTR static void NAME(const double *x, double *y, int64_t n)                         \
    {                                                                                   \
        double in[MLS_VEXP_CHUNK];                                                      \
        for (int64_t i0 = 0; i0 < n; i0 += MLS_VEXP_CHUNK) {                            \
            const int64_t m = n - i0 < MLS_VEXP_CHUNK ? n - i0 : MLS_VEXP_CHUNK;        \
            memcpy(in, x + i0, (size_t)m * sizeof *in);                                 \
            double *out = y + i0;                                                       \
            for (int64_t i = 0; i < m; i++) {                                           \
                double v = in[i];                                                       \
                v = v > MLS_VEXP_HI ? MLS_VEXP_HI : v;                                  \
                v = v < MLS_VEXP_LO ? MLS_VEXP_LO : v;                                  \
                double kd = FMA(v, MLS_VEXP_INV_LN2, MLS_VEXP_SHIFT) - MLS_VEXP_SHIFT;  \
                double r = FMA(-kd, MLS_VEXP_LN2_HI, v);                                \
                r = FMA(-kd, MLS_VEXP_LN2_LO, r);                                       \
                double p = 0x1.6124613a86d09p-33; /* 1/13! */                            \
                p = FMA(p, r, 0x1.1eed8eff8d898p-29); /* 1/12! */                        \
                p = FMA(p, r, 0x1.ae64567f544e4p-26); /* 1/11! */                        \
                p = FMA(p, r, 0x1.27e4fb7789f5cp-22); /* 1/10! */                        \
                p = FMA(p, r, 0x1.71de3a556c734p-19); /* 1/9! */                         \
                p = FMA(p, r, 0x1.a01a01a01a01ap-16); /* 1/8! */                         \
                p = FMA(p, r, 0x1.a01a01a01a01ap-13); /* 1/7! */                         \
                p = FMA(p, r, 0x1.6c16c16c16c17p-10); /* 1/6! */                         \
                p = FMA(p, r, 0x1.1111111111111p-7);  /* 1/5! */                         \
                p = FMA(p, r, 0x1.5555555555555p-5);  /* 1/4! */                         \
                p = FMA(p, r, 0x1.5555555555555p-3);  /* 1/3! */                         \
                p = FMA(p, r, 0.5);                                                     \
                p = FMA(p, r, 1.0);                                                     \
                p = FMA(p, r, 1.0);                                                     \
                double t1 = FMA(kd, 0.5, MLS_VEXP_SHIFT);                               \
                double n1 = t1 - MLS_VEXP_SHIFT;                                        \
                double t2 = (kd - n1) + MLS_VEXP_SHIFT;                                 \
                out[i] = (p * mls_vexp_pow2(t1)) * mls_vexp_pow2(t2);                   \
            }                                                                           \
        }                                                                               \
    }

MLS_VEXP_DEFINE(mls_vexp_generic, , MLS_VEXP_MUL_ADD)

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define MLS_VEXP_DISPATCH 1
MLS_VEXP_DEFINE(mls_vexp_avx2, __attribute__((target("avx2,fma"))), __builtin_fma)
MLS_VEXP_DEFINE(mls_vexp_avx512,
                __attribute__((target("avx512f,avx2,fma,prefer-vector-width=512"))),
                __builtin_fma)
#endif

void mls_vmath_exp_f64(const double *x, double *y, int64_t n)
{
#ifdef MLS_VEXP_DISPATCH
    if (__builtin_cpu_supports("avx512f")) {
        mls_vexp_avx512(x, y, n);
        return;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        mls_vexp_avx2(x, y, n);
        return;
    }
#endif
    mls_vexp_generic(x, y, n);
}
