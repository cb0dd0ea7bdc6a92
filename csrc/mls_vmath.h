/* mls_vmath.h: elementwise math over arrays, written to vectorise.
 * Pure C: no Python, no globals (the CPU-feature dispatch reads GCC's
 * cpu model, which the runtime initialises).
 */
#ifndef MLS_VMATH_H
#define MLS_VMATH_H

#include <stdint.h>

/* y[i] = exp(x[i]) for i < n; y may equal x (in place), otherwise the two
 * must not overlap.
 *
 * Accuracy: within 1 ulp of the correctly rounded value wherever the
 * result is normal (measured for all three builds in mls_vmath.c: 6000
 * points against mpmath at 120 bits, and 3.1 million points over
 * [-746, 746] plus the edge cases against numpy.exp); a subnormal result
 * is rounded once, as the scaling of a normal number, so it is within 1 ulp
 * of the subnormal grid. tests/test_linear_vexp.py checks it through
 * predict_proba (<= 4 ulp there, the divisions included).
 * Special values: exp(+inf) = +inf, exp(-inf) = 0, exp(NaN) = NaN,
 * x > 709.78 overflows to +inf and x < -745.14 underflows to +0, as libm.
 * Results may differ in the last bit between CPUs (the AVX2/AVX-512
 * builds fuse multiply-adds), never by more than the bound above. */
void mls_vmath_exp_f64(const double *x, double *y, int64_t n);

#endif /* MLS_VMATH_H */
