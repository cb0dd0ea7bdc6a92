/* mls_gemm_small.h: X @ W^T for a few rows, streaming W once.
 *
 * For 2 to a few dozen rows a BLAS GEMM first packs the whole weight matrix
 * (for a 2048 x 1024 float64 model, 16 MB read and written again), which
 * costs more than the multiply itself; GEMV reads W once per row. These
 * kernels read each weight once per 32 rows of X (so once per call for a
 * micro-batch) and make a contiguous copy of those rows, which is cheap
 * only while `rows` is small next to k: past a few dozen rows GEMM is
 * faster (measured cutoffs in mls_linear.c).
 *
 * Pure C: no Python, no BLAS. Single-threaded: the caller's thread does all
 * the work (serving runs BLAS with 1 thread per call, and the batcher gets
 * its parallelism from concurrent requests, not from inside one).
 *
 * Determinism: each output element is summed in one fixed order that
 * depends on d and on the kernel variant only, never on `rows`, `k`, the
 * strides or the element's position, so a row's result is bit-identical
 * whatever else is in the batch. Different variants (and so different
 * CPUs) may differ in the last bits: the AVX2/AVX-512 ones fuse
 * multiply-adds and sum 4/8/16 partial sums.
 */
#ifndef MLS_GEMM_SMALL_H
#define MLS_GEMM_SMALL_H

#include <stdint.h>

#include "mls_status.h"

typedef enum mls_gemm_small_isa {
    MLS_GEMM_SMALL_OFF = 0, /* callers use BLAS instead */
    MLS_GEMM_SMALL_C,       /* plain C (SSE2 on x86-64: the build has no -march) */
    MLS_GEMM_SMALL_AVX2,    /* avx2 + fma */
    MLS_GEMM_SMALL_AVX512,  /* avx512f + fma */
} mls_gemm_small_isa;

/* The variant the kernels run, chosen on the first call and then fixed for
 * the process: the best one the CPU supports (AVX-512 or AVX2; "off"
 * without AVX2, where plain C loses to GEMM), or the one named by the
 * environment variable MLSERVE_GEMM_SMALL ("off", "c", "avx2", "avx512";
 * "auto" or unset: the default), lowered to what the CPU supports. Meant
 * for tests and benchmarks; an unknown value means "auto". */
mls_gemm_small_isa mls_gemm_small_isa_get(void);

/* "off", "c", "avx2" or "avx512". */
const char *mls_gemm_small_isa_name(mls_gemm_small_isa isa);

/* out[i*ldo + j] = sum over f < d of X[i*ldx + f] * W[j*d + f], for i < rows
 * and j < k: W is row-major (k, d), the layout of a linear model's coef.
 * Needs rows, k, d >= 0, ldx >= d, ldo >= k and every index in range of
 * int64_t; otherwise MLS_STATUS_ERR_SHAPE and out is untouched. X and W
 * must not overlap out. Allocates a copy of up to 32 rows of X (about
 * 32 * d elements): MLS_STATUS_ERR_NOMEM if that fails. Runs even when the
 * variant is "off" (then in C); "off" only tells callers to prefer BLAS. */
mls_status mls_gemm_small_f64(int64_t rows, int64_t k, int64_t d, const double *X, int64_t ldx,
                              const double *W, double *out, int64_t ldo, mls_error *err);
mls_status mls_gemm_small_f32(int64_t rows, int64_t k, int64_t d, const float *X, int64_t ldx,
                              const float *W, float *out, int64_t ldo, mls_error *err);

#endif /* MLS_GEMM_SMALL_H */
