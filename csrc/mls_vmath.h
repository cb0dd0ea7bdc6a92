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
 * Accuracy: within 2 ulp of the exact value for every result in the
 * normal range (tests/test_linear_vexp.py measures <= 1 ulp against
 * numpy.exp over [-745, 709.8] and a correctly rounded reference on a
 * sample); results in the subnormal range are rounded once, as the
 * scaling of a normal number, so they are within 1 ulp of the subnormal
 * grid. Special values: exp(+inf) = +inf, exp(-inf) = 0, exp(NaN) = NaN,
 * x > 709.78 overflows to +inf and x < -745.14 underflows to +0, as libm.
 * Results may differ in the last bit between CPUs (the AVX2/AVX-512
 * builds fuse multiply-adds), never by more than the bound above. */
void mls_vmath_exp_f64(const double *x, double *y, int64_t n);

#endif /* MLS_VMATH_H */
