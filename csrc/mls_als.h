/* mls_als.h: implicit-feedback alternating least squares (Hu, Koren,
 * Volinsky 2008), solved row by row with a few conjugate-gradient steps
 * (Takacs, Pilaszy, Tikk 2011), as the `implicit` library's CPU solver does.
 *
 * The matrix R (rows x cols, CSR) holds non-negative interaction strengths
 * r. Confidence c = 1 + alpha * r, preference p = 1 where r > 0 (an explicit
 * r == 0 is the same as a missing entry). One half-step solves, for every
 * row u of X with the other side's factors Y fixed,
 *
 *     (Y^T Y + reg I + Y_u^T (C_u - I) Y_u) x_u = Y_u^T C_u p_u
 *
 * never forming the f x f matrix per row: Y^T Y + reg I is computed once
 * (BLAS ssyrk), and its product with a vector plus the row's sparse term is
 * applied in each CG step. Each solve starts from the row's current x_u
 * (warm start) and runs cg_steps steps; a row with no entries gets zeros.
 *
 * Pure C: no Python. Factors are float32, row-major (n, f). Threads: the
 * rows are shared out in chunks by an atomic counter (each row writes only
 * its own x_u and reads Y), so the result does not depend on the number of
 * threads or on the order rows are solved in.
 */
#ifndef MLS_ALS_H
#define MLS_ALS_H

#include <stdint.h>

#include "mls_status.h"

/* A CSR matrix as the solver reads it: indptr has n_rows + 1 entries,
 * indices and values nnz each (checked: indptr[n_rows] == nnz). */
typedef struct mls_als_csr {
    int64_t n_rows, n_cols, nnz;
    const int64_t *indptr;
    const int32_t *indices;
    const float *values;
} mls_als_csr;

/* The largest factor dimension (scratch per thread is a few f-vectors,
 * the shared Gram matrix f * f floats). */
#define MLS_ALS_MAX_FACTORS 4096
/* The most threads one solve starts. */
#define MLS_ALS_MAX_THREADS 256

/* Checks the structure and values: n_rows, n_cols >= 0, indptr[0] == 0,
 * non-decreasing, indptr[n_rows] == nnz, every index in [0, n_cols), every
 * value finite and >= 0. `what` names the matrix in messages. */
mls_status mls_als_check_csr(const mls_als_csr *m, const char *what, mls_error *err);

/* The transpose of a checked CSR matrix into caller-owned arrays:
 * t_indptr (n_cols + 1), t_indices and t_values (nnz each). Within each
 * output row the column indices ascend (a stable counting sort). */
mls_status mls_als_transpose(const mls_als_csr *m, int64_t *t_indptr, int32_t *t_indices,
                             float *t_values, mls_error *err);

/* Threads a solve uses for `requested` (0: every CPU this process may run
 * on), capped at MLS_ALS_MAX_THREADS. */
int mls_als_thread_count(int requested);

/* One half-step: updates every row of `factors` (m->n_rows x f) from
 * `other` (m->n_cols x f). Checks m (as mls_als_check_csr), f in
 * [1, MLS_ALS_MAX_FACTORS], alpha and regularization finite and >= 0,
 * cg_steps >= 1, n_threads >= 0. factors must not overlap other.
 * MLS_STATUS_ERR_NOMEM if scratch cannot be allocated (factors untouched). */
mls_status mls_als_solve(const mls_als_csr *m, float *factors, const float *other, int64_t f,
                         double alpha, double regularization, int cg_steps, int n_threads,
                         mls_error *err);

/* gram = Y^T Y + regularization I (f x f, full, float32) of the factors Y
 * (n x f), through BLAS ssyrk: what every row solve against Y shares.
 * Checks f in [1, MLS_ALS_MAX_FACTORS], n >= 0, regularization finite >= 0. */
mls_status mls_als_gram(const float *Y, int64_t n, int64_t f, double regularization,
                        float *gram, mls_error *err);

/* Fold-in: exact least-squares factors for new rows (their entries in m,
 * columns indexing `other`), by a Cholesky solve of the full system per row
 * in float64, without changing `other`. gram is mls_als_gram(other, ...)
 * (computed once per model by the caller, so a single new user costs
 * O(n_u f^2 + f^3), not O(n_cols f^2)). out is (m->n_rows x f); rows without
 * entries get zeros. MLS_STATUS_ERR_NUMERIC if a system is not positive
 * definite (only possible with regularization 0). */
mls_status mls_als_fold_in(const mls_als_csr *m, const float *other, int64_t f,
                           const float *gram, double alpha, float *out, mls_error *err);

/* "avx512", "avx2" or "c": the kernel variant this CPU runs. */
const char *mls_als_kernel_name(void);

#endif /* MLS_ALS_H */
